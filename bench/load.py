"""Load: 200 concurrent streamed runs through the gateway, on one worker and on two, under
daphne and under uvicorn. Frames lost, errors, frame latency, memory and CPU per worker.

Latency is measured end to end: the simulator stamps each frame with the time it left
(`metadata.simulate.stampFrames`), and the client subtracts it on arrival (same clock).
PostgreSQL and Redis are used when they answer on 127.0.0.1 (as on CI machines), otherwise
SQLite and one process's memory.

    .venv/bin/python -m bench.load
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import httpx

from bench._results import write_section
from bench.harness import Stack, process_stats, summary

STREAMS = 200
DELTAS = 50
DRIP_MS = 20
BODY = {
    "agent": "support-chat",
    "prompt": "Load test",
    "metadata": {"simulate": {"deltas": DELTAS, "dripMs": DRIP_MS, "stampFrames": True}},
}
# run_started, the deltas, assistant_message and run_completed.
EXPECTED_FRAMES = DELTAS + 3
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "rtdash_bench_load"


def _postgres_and_redis() -> tuple[str | None, str | None]:
    if not shutil.which("psql"):
        return None, None
    drop = subprocess.run(
        ["psql", PG_ADMIN, "-qc", f"DROP DATABASE IF EXISTS {BENCH_DB}"], capture_output=True
    )
    create = subprocess.run(
        ["psql", PG_ADMIN, "-qc", f"CREATE DATABASE {BENCH_DB}"], capture_output=True
    )
    if drop.returncode or create.returncode:
        return None, None
    redis = subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True, text=True)
    redis_url = "redis://127.0.0.1:6379/3" if redis.stdout.strip() == "PONG" else None
    return f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}", redis_url


async def _one_stream(client: httpx.AsyncClient, url: str, token: str, latencies: list[float]):
    frames, buffer = 0, b""
    async with client.stream(
        "POST", url + "/v1/run", json=BODY, headers={"X-API-Key": token}
    ) as response:
        if response.status_code != 200:
            return 0, 1
        async for chunk in response.aiter_raw():
            now = time.time()
            buffer += chunk
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                if b"data: " not in block:
                    continue
                frames += 1
                # The stamp is the last field of each frame's JSON; reading it without a JSON
                # parse keeps the client from being what this benchmark measures.
                stamp = block.rfind(b'"sentAt":')
                if stamp >= 0:
                    sent = float(block[stamp + 9 :].rstrip(b"}\n "))
                    latencies.append((now - sent) * 1000)
    return frames, 0


async def _load(stack: Stack) -> dict:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=STREAMS * 2, max_keepalive_connections=STREAMS)
    before = [process_stats(pid) for pid in stack.pids]
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        results = await asyncio.gather(
            *(
                _one_stream(client, stack.urls[index % len(stack.urls)], stack.token, latencies)
                for index in range(STREAMS)
            ),
            return_exceptions=True,
        )
    wall = time.monotonic() - started
    after = [process_stats(pid) for pid in stack.pids]
    errors = sum(1 for r in results if isinstance(r, BaseException) or r[1])
    received = sum(r[0] for r in results if not isinstance(r, BaseException))
    return {
        "lost": STREAMS * EXPECTED_FRAMES - received,
        "errors": errors,
        "latency": summary(latencies),
        "wall": wall,
        "cpu": [(b[0] - a[0]) / wall * 100 for a, b in zip(before, after, strict=True)],
        "rss": [b[1] / 2**20 for b in after],
    }


def main() -> None:
    database_url, redis_url = _postgres_and_redis()
    backing = "PostgreSQL + Redis" if database_url and redis_url else "SQLite"
    rows = []
    for server in ("daphne", "uvicorn"):
        for workers in (1, 2):
            env = {"REDIS_URL": redis_url} if redis_url and database_url else {}
            url = database_url if redis_url else None
            with Stack(server=server, workers=workers, database_url=url, **env) as stack:
                asyncio.run(_load(stack))  # warm-up round, not reported
                result = asyncio.run(_load(stack))
            latency = result["latency"]
            rows.append(
                f"| {server} | {workers} | {result['lost']} | {result['errors']} | "
                f"{latency['p50']:.1f} | {latency['p95']:.1f} | {latency['p99']:.1f} | "
                f"{', '.join(f'{m:.0f}' for m in result['rss'])} | "
                f"{', '.join(f'{c:.0f}%' for c in result['cpu'])} | {result['wall']:.1f} |"
            )
            if database_url:
                # A fresh database for the next configuration.
                database_url, redis_url = _postgres_and_redis()
    markdown = "\n".join(
        [
            "## Load (`bench/load.py`)",
            "",
            f"{STREAMS} concurrent streamed runs through the gateway ({DELTAS} deltas each, "
            f"{DRIP_MS} ms apart, {EXPECTED_FRAMES} frames), on {backing}, spread evenly over "
            "the workers. Latency: frame sent by the simulator → frame received by the client "
            "through rtdash (ms). Memory is each worker's resident size after the round; CPU "
            "is each worker's share of one core during it.",
            "",
            "| server | workers | frames lost | errors | p50 | p95 | p99 | RSS MiB | CPU "
            "| wall s |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    write_section("load", markdown)


if __name__ == "__main__":
    main()
