"""Does a worker grow with the runs it has recorded? (Issue 18, target 6.)

One uvicorn worker, configured as deployed (debug off, SQLite, Redis for the channel layer and
the cache), records short streamed runs through the gateway, a few at a time; its resident
memory is read from /proc at checkpoints, each once the worker has finished recording what it
was sent. The target: its RSS after 10,000 runs within 10% of its RSS after 1,000.

    .venv/bin/python -m bench.memory [--runs 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import httpx

from bench._results import write_section
from bench.gateway import SHORT_STREAM_BODY
from bench.harness import RedisServer, Stack, process_stats, production

# The floor's short stream (bench/gateway.py): one upstream write, so runs come quickly.
STREAM_BODY = SHORT_STREAM_BODY
CONCURRENCY = 4
BASELINE_RUNS = 1_000
TARGET_GROWTH = 0.10
# Once the last response is read, the worker still parses and stores that run and finishes
# it; its memory is read after this pause (and after the recorded count has caught up).
SETTLE_SECONDS = 2.0


async def _stream(client: httpx.AsyncClient, url: str, token: str) -> None:
    async with client.stream(
        "POST", url, json=STREAM_BODY, headers={"X-API-Key": token}
    ) as response:
        assert response.status_code == 200, response.status_code
        async for _chunk in response.aiter_raw():
            pass


async def _send_runs(client: httpx.AsyncClient, stack: Stack, count: int) -> None:
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await _stream(client, stack.url + "/v1/run", stack.token)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def _finished_runs(stack: Stack) -> int:
    script = "from runs.models import Run; print(Run.objects.exclude(status='running').count())"
    return int(stack.manage("shell", "-c", script).splitlines()[-1])


def _settled_rss(stack: Stack, expected: int) -> int:
    """The worker's RSS once every run sent so far is recorded (bytes)."""
    time.sleep(SETTLE_SECONDS)
    deadline = time.monotonic() + 60
    while _finished_runs(stack) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return process_stats(stack.pids[0])[1]


def measure(total: int) -> str:
    checkpoints = sorted({100, BASELINE_RUNS, total // 4, total // 2, total})
    checkpoints = [c for c in checkpoints if c <= total]
    readings: list[tuple[int, int, float]] = []
    redis = RedisServer().start()
    try:
        with Stack(server="uvicorn", **production(redis.url)) as stack:
            started = time.monotonic()
            done = 0

            async def drive() -> None:
                nonlocal done
                limits = httpx.Limits(max_connections=CONCURRENCY * 2)
                async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                    for checkpoint in checkpoints:
                        await _send_runs(client, stack, checkpoint - done)
                        done = checkpoint
                        rss = await asyncio.to_thread(_settled_rss, stack, done)
                        readings.append((done, rss, time.monotonic() - started))
                        print(f"{done} runs: RSS {rss / 2**20:.1f} MiB", flush=True)

            load_before = " / ".join(f"{v:.1f}" for v in os.getloadavg())
            asyncio.run(drive())
            load_after = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    finally:
        redis.stop()
    baseline = next(rss for runs, rss, _ in readings if runs == BASELINE_RUNS)
    final = readings[-1][1]
    growth = final / baseline - 1
    rows = [
        f"| {runs:,} | {rss / 2**20:.1f} | {100 * (rss / baseline - 1):+.1f}% | {at:.0f} s |"
        for runs, rss, at in readings
    ]
    per_run = (final - baseline) / (readings[-1][0] - BASELINE_RUNS)
    verdict = "within" if growth <= TARGET_GROWTH else "outside"
    return "\n".join(
        [
            "## A worker's memory over many runs (`bench/memory.py`)",
            "",
            f"One uvicorn worker (debug off, SQLite, Redis) records {total:,} streamed runs "
            f"({STREAM_BODY['metadata']['simulate']['deltas']} deltas each) through the "
            f"gateway, {CONCURRENCY} at a time; its RSS is read from /proc at each checkpoint, "
            "once every run sent so far is recorded. Load average (1 / 5 / 15 min) "
            f"{load_before} before, {load_after} after.",
            "",
            f"| runs recorded | RSS (MiB) | against {BASELINE_RUNS:,} runs | elapsed |",
            "|---|---|---|---|",
            *rows,
            "",
            f"**RSS after {readings[-1][0]:,} runs is {100 * growth:+.1f}% of its RSS after "
            f"{BASELINE_RUNS:,}** ({verdict} the 10% target; {per_run:+.0f} bytes a run "
            "between the two).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    args = parser.parse_args()
    write_section("memory", measure(args.runs))


if __name__ == "__main__":
    main()
