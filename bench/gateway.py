"""What rtdash's gateway adds on top of the upstream, measured side by side.

Requests alternate direct-to-simulator and through-rtdash in one run, so both see the same
machine state. Every run through rtdash is recorded as usual (SQLite by default).

    .venv/bin/python -m bench.gateway
"""

from __future__ import annotations

import asyncio
import time

import httpx

from bench._results import write_section
from bench.harness import SIM_KEY, RedisServer, Stack, production, summary
from bench.reference import ReferenceServer

JSON_BODY = {
    "agent": "code-assistant",
    "prompt": "Run the tests and summarize failures.",
    "stream": False,
    "config": {"maxTurns": 12},
}
STREAM_BODY = {
    "agent": "support-chat",
    "prompt": "Count",
    "metadata": {"simulate": {"deltas": 10_000}},
}
SEQUENTIAL = 400
CONCURRENT = 16
CONCURRENT_TOTAL = 1600
# Odd, for a true median; enough that one stalled round (this VM has them) does not decide it.
STREAM_ROUNDS = 15
# Not counted: a proxy's first big streams after the JSON rounds were 2-3x slower.
STREAM_WARMUP_ROUNDS = 2


async def _timed_json(client: httpx.AsyncClient, url: str, key: str) -> float:
    started = time.perf_counter()
    response = await client.post(url, json=JSON_BODY, headers={"X-API-Key": key})
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.text
    return elapsed


async def _sequential(client, direct_url, rtdash_url, token):
    direct, through = [], []
    for _ in range(20):  # warm both paths: connections, caches, imports
        await _timed_json(client, direct_url, SIM_KEY)
        await _timed_json(client, rtdash_url, token)
    for _ in range(SEQUENTIAL):
        direct.append(await _timed_json(client, direct_url, SIM_KEY))
        through.append(await _timed_json(client, rtdash_url, token))
    return summary(direct), summary(through)


async def _concurrent(client, url, key):
    latencies: list[float] = []
    remaining = CONCURRENT_TOTAL

    async def worker():
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            latencies.append(await _timed_json(client, url, key))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENT)))
    elapsed = time.perf_counter() - started
    return summary(latencies), CONCURRENT_TOTAL / elapsed


async def _timed_stream(client, url, key) -> tuple[float, float, int]:
    started = time.perf_counter()
    first = None
    received = []
    async with client.stream("POST", url, json=STREAM_BODY, headers={"X-API-Key": key}) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            if first is None:
                first = time.perf_counter()
            received.append(chunk)
    ended = time.perf_counter()
    frames = b"".join(received).count(b"\n\n")
    return (first - started) * 1000, (ended - started) * 1000, frames


async def measure(stack: Stack) -> str:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        direct_url = stack.simulator.url + "/run"
        rtdash_url = stack.url + "/v1/run"
        direct, through = await _sequential(client, direct_url, rtdash_url, stack.token)
        direct_c, direct_rps = await _concurrent(client, direct_url, SIM_KEY)
        through_c, through_rps = await _concurrent(client, rtdash_url, stack.token)
        streams = await _stream_rounds(client, direct_url, (rtdash_url, stack.token))

    def row(name, values):
        return f"| {name} | {values['p50']:.2f} | {values['p95']:.2f} | {values['p99']:.2f} |"

    def stream_stat(kind, index):
        return sorted(s[index] for s in streams[kind])[len(streams[kind]) // 2]

    overhead = through["p50"] - direct["p50"]
    ratio = stream_stat("rtdash", 1) / stream_stat("direct", 1)
    lines = [
        "## Gateway overhead (`bench/gateway.py`)",
        "",
        f"JSON `POST /v1/run`, {SEQUENTIAL} sequential requests each way, alternating "
        "(milliseconds, client-side):",
        "",
        "| path | p50 | p95 | p99 |",
        "|---|---|---|---|",
        row("direct to simulator", direct),
        row("through rtdash (recorded)", through),
        "",
        f"**JSON p50 overhead: {overhead:.2f} ms** (target ≤ 4 ms); "
        f"p95 overhead {through['p95'] - direct['p95']:.2f} ms.",
        "",
        f"Concurrency {CONCURRENT}, {CONCURRENT_TOTAL} requests each way:",
        "",
        "| path | p50 | p95 | p99 | req/s |",
        "|---|---|---|---|---|",
        row("direct to simulator", direct_c) + f" {direct_rps:.0f} |",
        row("through rtdash (recorded)", through_c) + f" {through_rps:.0f} |",
        "",
        f"10,000-delta stream, median of {STREAM_ROUNDS} (milliseconds):",
        "",
        "| path | first frame | total | frames |",
        "|---|---|---|---|",
        f"| direct | {stream_stat('direct', 0):.1f} | {stream_stat('direct', 1):.1f} | "
        f"{streams['direct'][0][2]} |",
        f"| through rtdash (recorded) | {stream_stat('rtdash', 0):.1f} | "
        f"{stream_stat('rtdash', 1):.1f} | {streams['rtdash'][0][2]} |",
        "",
        f"**Stream total through rtdash / direct: {ratio:.2f}x** (target ≤ 1.25x).",
    ]
    return "\n".join(lines)


async def _stream_rounds(
    client: httpx.AsyncClient, direct_url: str, through: tuple[str, str]
) -> dict[str, list[tuple[float, float, int]]]:
    """STREAM_ROUNDS pairs: the stream direct, then through (url, key), then a pause.

    Direct goes first and the pause is long, so that each stream is measured on its own: not
    behind the proxy's bookkeeping of the one before (rtdash stores and parses a stream after
    the client has it), and with both sides of a pair as warm or as cold as each other.
    """
    through_url, key = through
    for _ in range(STREAM_WARMUP_ROUNDS):
        await _timed_stream(client, direct_url, SIM_KEY)
        await _timed_stream(client, through_url, key)
        await asyncio.sleep(1)
    streams = {"direct": [], "rtdash": []}
    for _ in range(STREAM_ROUNDS):
        streams["direct"].append(await _timed_stream(client, direct_url, SIM_KEY))
        streams["rtdash"].append(await _timed_stream(client, through_url, key))
        await asyncio.sleep(1)
    return streams


async def _stream_ratio(client: httpx.AsyncClient, stack: Stack, proxy_url: str) -> float:
    """Median total time of the 10,000-delta stream through `proxy_url` over direct, measured
    exactly as rtdash's is."""
    streams = await _stream_rounds(
        client, stack.simulator.url + "/run", (proxy_url + "/v1/run", SIM_KEY)
    )
    middle = STREAM_ROUNDS // 2
    totals = {kind: sorted(s[1] for s in values) for kind, values in streams.items()}
    return totals["rtdash"][middle] / totals["direct"][middle]


async def _references(stack: Stack) -> list[str]:
    """The same sequential JSON comparison for the reference proxies (bench/reference.py)."""
    rows = []
    async with httpx.AsyncClient(timeout=120) as client:
        for kind, title in (
            ("bare", "a bare ASGI app forwarding with httpx"),
            ("django", "a Django async view forwarding with httpx (no database)"),
        ):
            with ReferenceServer(kind, stack.simulator.url) as reference:
                direct, through = await _sequential(
                    client, stack.simulator.url + "/run", reference.url + "/v1/run", SIM_KEY
                )
                ratio = "n/a"
                if kind == "bare":  # the Django view answers whole bodies only
                    ratio = f"{await _stream_ratio(client, stack, reference.url):.2f}x"
            overhead = through["p50"] - direct["p50"]
            rows.append(
                f"| {title} | {direct['p50']:.2f} | {through['p50']:.2f} | {overhead:.2f} "
                f"| {ratio} |"
            )
    return rows


def main() -> None:
    sections = []
    references: list[str] = []
    for server in ("daphne", "uvicorn"):
        redis = RedisServer().start()
        try:
            with Stack(server=server, **production(redis.url)) as stack:
                body = asyncio.run(measure(stack))
                if not references:
                    references = asyncio.run(_references(stack))
        finally:
            redis.stop()
        # measure() titles its section; one per server here.
        sections.append(body.replace("## Gateway overhead (`bench/gateway.py`)", f"### {server}"))
    write_section(
        "gateway",
        "## Gateway overhead (`bench/gateway.py`)\n\nThe same rtdash served by daphne and by "
        "uvicorn (one worker each, SQLite, every run recorded), configured as deployed: debug "
        "off, Redis for the channel layer and the cache (a private redis-server).\n\n"
        + "\n\n".join(sections)
        + "\n\n### What a proxy hop costs on this machine\n\n"
        "The same sequential comparison (direct and through, alternating, "
        f"{SEQUENTIAL} requests each) for two reference proxies served by uvicorn, measured "
        "in the same run: the scale the targets were set on (a bare ASGI hop about 1 ms, a "
        "naive Django view about 5 ms, on the machine they were measured on).\n\n"
        "| proxy | direct p50 | through p50 | p50 overhead | 10,000-delta stream, "
        "through / direct |\n|---|---|---|---|---|\n" + "\n".join(references),
    )


if __name__ == "__main__":
    main()
