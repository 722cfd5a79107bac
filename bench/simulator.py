"""The simulator's own throughput: JSON runs per second and SSE frames per second.

Run from the project root: `.venv/bin/python -m bench.simulator`. Loopback only, bounded loops.
The point is a ceiling: a benchmark of rtdash must sit well below these numbers, or it is
measuring the simulator. The client (httpx, same machine) costs more CPU than the server, so
next to each rate the server's own CPU time is reported, read from /proc: that gives the
ceiling the simulator itself would reach with a faster client.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from bench._results import write_section
from simulator.testing import SimulatorServer

KEY = "rt_test_demo"
JSON_BODY = {"agent": "support-chat", "prompt": "My invoice is wrong", "stream": False}
SEQUENTIAL_REQUESTS = 500
CONCURRENT_REQUESTS = 2000
CONCURRENCY = 16
TIME_CAP = 20.0  # seconds; no loop below runs longer than this
STREAMS = ((10_000, 5), (100_000, 3))  # (deltas per run, repetitions)

T = TypeVar("T")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    seconds: float
    server_cpu: float  # seconds of the simulator's CPU over the same span


async def timed(pid: int, work: Callable[[], Awaitable[T]]) -> tuple[T, Measured]:
    cpu0, started = cpu_seconds(pid), time.perf_counter()
    result = await work()
    return result, Measured(time.perf_counter() - started, cpu_seconds(pid) - cpu0)


async def json_sequential(client: httpx.AsyncClient) -> int:
    started = time.perf_counter()
    done = 0
    while done < SEQUENTIAL_REQUESTS and time.perf_counter() - started < TIME_CAP:
        response = await client.post("/run", json=JSON_BODY)
        response.raise_for_status()
        done += 1
    return done


async def json_concurrent(client: httpx.AsyncClient) -> int:
    started = time.perf_counter()
    remaining = CONCURRENT_REQUESTS
    done = 0

    async def worker() -> None:
        nonlocal remaining, done
        while remaining > 0 and time.perf_counter() - started < TIME_CAP:
            remaining -= 1
            response = await client.post("/run", json=JSON_BODY)
            response.raise_for_status()
            done += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done


async def one_stream(client: httpx.AsyncClient, deltas: int) -> tuple[int, int]:
    """(frames, bytes) of one run of `deltas` deltas, read as raw bytes."""
    body = {"agent": "support-chat", "prompt": "go", "metadata": {"simulate": {"deltas": deltas}}}
    frames = size = 0
    tail = b""
    async with client.stream("POST", "/run", json=body) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            size += len(chunk)
            # A frame ends with a blank line; carry one byte so a split "\n\n" still counts.
            frames += (tail + chunk).count(b"\n\n")
            tail = chunk[-1:]
    # run_started + deltas + assistant_message + run_completed
    assert frames == deltas + 3, (frames, deltas)
    return frames, size


def json_row(label: str, count: int, m: Measured) -> str:
    per_request = m.server_cpu / count
    return (
        f"| {label} | {count / m.seconds:,.0f} req/s | {m.server_cpu / m.seconds:.0%} "
        f"| {per_request * 1e6:,.0f} µs/req | ≈ {1 / per_request:,.0f} req/s |"
    )


async def measure() -> str:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    with SimulatorServer(keys=(KEY,)) as sim:
        assert sim.pid is not None
        pid = sim.pid
        async with httpx.AsyncClient(
            base_url=sim.url, headers={"X-API-Key": KEY}, timeout=60, limits=limits
        ) as client:
            await client.post("/run", json=JSON_BODY)  # warm up the connection and imports
            sequential, seq_m = await timed(pid, lambda: json_sequential(client))
            concurrent, con_m = await timed(pid, lambda: json_concurrent(client))
            stream_rows = []
            for deltas, repetitions in STREAMS:
                runs = [
                    await timed(pid, lambda d=deltas: one_stream(client, d))
                    for _ in range(repetitions)
                ]
                seconds = statistics.median(m.seconds for _, m in runs)
                server = statistics.median(m.server_cpu for _, m in runs)
                frames, size = runs[0][0]
                stream_rows.append(
                    f"| {deltas:,}-delta stream ({size / 1e6:,.1f} MB) | {seconds * 1000:,.0f} ms "
                    f"| {frames / seconds:,.0f} frames/s | {size / seconds / 1e6:,.0f} MB/s "
                    f"| {server * 1000:,.0f} ms |"
                )
    return "\n".join(
        [
            "## Simulator throughput",
            "",
            "`python -m bench.simulator`: the simulator (uvicorn, h11) on loopback, driven by one",
            "httpx.AsyncClient on the same machine. The client is the slower side (see how",
            "busy the server is), so the server's own CPU time per request, from /proc, is",
            "shown with the ceiling it implies on one core.",
            "",
            "| JSON runs (`stream: false`) | measured | server busy | server CPU | ceiling |",
            "|---|---|---|---|---|",
            json_row(f"sequential, {sequential} requests", sequential, seq_m),
            json_row(f"concurrency {CONCURRENCY}, {concurrent} requests", concurrent, con_m),
            "",
            "| SSE run (`metadata.simulate.deltas`) | wall time | frames | bytes | server CPU |",
            "|---|---|---|---|---|",
            *stream_rows,
            "",
            "Streams: median of repeated runs, frames counted in raw bytes (`aiter_raw`); CPU times"
            " are read in 10 ms ticks.",
        ]
    )


def main() -> None:
    write_section("simulator", asyncio.run(measure()))


if __name__ == "__main__":
    main()
