"""Two or more rtdash checkouts compared in the same run (issue 18's method for a change).

    python -m bench.compare before=/path/to/old/checkout after=/path/to/new/checkout

One stack (simulator, SQLite, Redis, the bare hop) and one uvicorn worker per checkout, each
run from its own directory on the stack's database and token, so only the code differs. The
floor bench's rounds (`bench/gateway.py`: a JSON run, then the first byte of a short stream)
go to the direct path, the bare hop and every worker in a random order each round. On a
machine whose speed drifts between runs by as much as a change saves, this is how a change
is measured: each line gives each checkout's p50 overhead and its ratio to the bare hop.
Prints; writes nothing to bench/results.md.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx

from bench.gateway import _first_byte, _floor_rounds, _paired_overheads, _timed_json
from bench.harness import (
    HOST,
    SIM_KEY,
    RedisServer,
    Stack,
    free_port,
    production,
    wait_until_answers,
    worker_command,
)
from bench.reference import ReferenceServer

REPEATS = int(os.environ.get("COMPARE_REPEATS", "3"))


async def _compare(stack: Stack, bare_url: str, workers: dict[str, str]) -> None:
    paths = {
        "direct": (stack.simulator.url + "/run", SIM_KEY),
        "bare": (bare_url + "/v1/run", SIM_KEY),
    }
    paths.update({name: (url + "/v1/run", stack.token) for name, url in workers.items()})
    async with httpx.AsyncClient(timeout=120) as client:
        for title, timed in (("JSON", _timed_json), ("first byte", _first_byte)):
            times = await _floor_rounds(client, timed, paths, shuffle=True)
            bare = _paired_overheads(times, "bare")["p50"]
            cells = [f"{title}: bare hop {bare:.2f} ms"]
            for name in workers:
                overhead = _paired_overheads(times, name)["p50"]
                cells.append(f"{name} {overhead:.2f} ms ({overhead / bare:.2f}x)")
            print(" | ".join(cells), flush=True)


def main() -> None:
    checkouts = dict(argument.split("=", 1) for argument in sys.argv[1:])
    if not checkouts:
        sys.exit(__doc__)
    redis = RedisServer().start()
    processes: list[subprocess.Popen] = []
    try:
        with (
            Stack(server="uvicorn", **production(redis.url)) as stack,
            ReferenceServer("bare", stack.simulator.url) as bare,
        ):
            workers = {}
            for name, directory in checkouts.items():
                port = free_port()
                command = worker_command("uvicorn", port)
                processes.append(
                    subprocess.Popen(
                        command,
                        cwd=directory,
                        env=stack.env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                workers[name] = f"http://{HOST}:{port}"
                wait_until_answers(workers[name] + "/healthz")
            for _ in range(REPEATS):
                asyncio.run(_compare(stack, bare.url, workers))
    finally:
        for process in processes:
            process.terminate()
        redis.stop()


if __name__ == "__main__":
    main()
