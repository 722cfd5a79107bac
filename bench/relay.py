"""The playground's relay: upstream frame → browser websocket frame, at 1, 50 and 200 streams.

Each level gets a fresh stack (one worker under daphne or uvicorn, SQLite, the in-process or
the Redis pub/sub channel layer: CONFIGS) and a warm-up run. Then N logged-in websocket
clients each start a streamed run at once, exactly as the playground page does
(`ws/playground/`, `{"action": "start", "form": ...}`), and read frames until their run is
finished.

The upstream is a small timestamping stand-in (`stamp_app` below) instead of the simulator:
each delta carries the CLOCK_MONOTONIC time it was written (`"t"`), which this process reads
on the same clock the moment the websocket frame carrying it is complete. So the latency is
the whole path: upstream socket → httpx → SSE parser → relay sink → channel layer → consumer
→ the ASGI server → client socket. Streams drip one delta every STREAM_INTERVAL_MS (an LLM's pace),
each starting at a random phase so 200 streams do not all write in the same millisecond.

Lost frames: sequences a client never got (of run_started, the deltas and run_completed);
also counted, duplicates and frames out of order. Memory per open stream: the worker's peak
RSS while the N streams are open, minus its RSS after the warm-up, divided by N.

The floor (`measure_floor`, `--floor`): the same streams from the same upstream through a
bare ASGI websocket relay (bench.reference `relay`), measured in the same run, so rtdash's
latency and CPU per frame can be read as multiples of what any Python relay costs here.

The idle level holds IDLE_SOCKETS logged-in sockets open and idle for a minute and reads the
worker's RSS per socket along the way, then starts a run on a few of them (idle_level).

    .venv/bin/python -m bench.relay                  # every level, into bench/results.md
    .venv/bin/python -m bench.relay --server uvicorn --layer in-memory --streams 200 --rounds 3
    .venv/bin/python -m bench.relay --server uvicorn --layer in-memory --streams 200 --floor
    .venv/bin/python -m bench.relay --server uvicorn --layer redis-pubsub --idle 1000
    (--profile FILE: a py-spy record of the worker during the level; FILE.txt for raw stacks)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench._results import write_section
from bench.harness import (
    RedisServer,
    ServerProcess,
    Stack,
    asgi_body,
    percentile,
    process_stats,
    production,
)
from bench.reference import ReferenceServer
from bench.ws import Socket, Stream, follow, log_in, sequence_faults
from simulator.testing import HOST, free_port

LEVELS = (1, 50, 200)
# Each (server, channel layer) as a deployment runs it (debug off; see harness.production):
# the in-process layer of a single-worker install (no REDIS_URL), and the Redis pub/sub layer
# that REDIS_URL configures, which several workers need. (channels_redis's list-based
# RedisChannelLayer was measured here before and dropped: see rtdash/settings.py.)
CONFIGS = (
    ("daphne", "in-memory"),
    ("uvicorn", "in-memory"),
    ("daphne", "redis-pubsub"),
    ("uvicorn", "redis-pubsub"),
)
# Also measured at 50 streams: starts spread evenly over this many seconds, as people arrive,
# rather than all in the same instant.
SPREAD_SECONDS = 1.0
# A level that has not finished by then is cut off; what never arrived counts as lost.
LEVEL_TIMEOUT_SECONDS = 90
STREAM_FRAMES = 100  # deltas per run
STREAM_INTERVAL_MS = 50
EXPECTED = STREAM_FRAMES + 2  # run_started, the deltas, run_completed
# The idle level: this many logged-in playground sockets held open, doing nothing, the
# worker's RSS read when they are all open and again after these many seconds; then a few of
# them start a run each, with the rest still open.
IDLE_SOCKETS = 1000
IDLE_SAMPLE_SECONDS = (0, 30, 60)
IDLE_PROBE_STREAMS = 10
IDLE_LAYERS = ("in-memory", "redis-pubsub")  # on uvicorn
# Sockets connect this many at a time (each one is a session lookup on the worker).
CONNECT_BATCH = 100

# --- The timestamping upstream ---------------------------------------------------------------


def _frame(event: str, payload: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def stamp_app(scope, receive, send) -> None:
    """A RunTools stand-in whose deltas say when they were written (time.monotonic_ns)."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"ok": true}'})
        return
    body = await asgi_body(receive)
    spec = json.loads(body or b"{}").get("metadata", {}).get("bench", {})
    frames, interval = int(spec.get("frames", 10)), float(spec.get("intervalMs", 50)) / 1000
    run_id, thread_id = f"run_{os.urandom(6).hex()}", f"thr_{os.urandom(6).hex()}"
    headers = [
        (b"content-type", b"text/event-stream"),
        (b"x-run-id", run_id.encode()),
        (b"x-thread-id", thread_id.encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})

    async def write(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    started = {"type": "run_started", "runId": run_id, "threadId": thread_id}
    await write(_frame("run_started", started))
    await asyncio.sleep(random.random() * interval)  # a random phase per stream
    for index in range(frames):
        await asyncio.sleep(interval)
        delta = {"type": "assistant_message_delta", "runId": run_id, "delta": "word ", "i": index}
        delta["t"] = time.monotonic_ns()
        await write(_frame("assistant_message_delta", delta))
    completed = {
        "type": "run_completed",
        "runId": run_id,
        "threadId": thread_id,
        "status": "completed",
        "result": "word " * frames,
        "usage": {"inputTokens": 10, "outputTokens": frames},
        "iterations": 1,
    }
    await write(_frame("run_completed", completed))
    await send({"type": "http.response.body", "body": b""})


class StampServer(ServerProcess):
    """Serves `stamp_app` with uvicorn in a subprocess; stands in for SimulatorServer."""

    what = "the stamp server"

    @property
    def url(self) -> str:
        return self.root + "/v1"

    def start(self) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "uvicorn", "bench.relay:stamp_app", "--host", HOST]
        command += ["--port", str(self.port), "--log-level", "warning", "--no-access-log"]
        command += ["--lifespan", "off"]
        self.spawn(command, "/healthz")


# --- Measuring --------------------------------------------------------------------------------


FORM = {
    "agent": "bench-agent",
    "prompt": "Stream, please",
    "stream": "on",
    "meta_key": ["bench"],
    "meta_value": [json.dumps({"frames": STREAM_FRAMES, "intervalMs": STREAM_INTERVAL_MS})],
}


def rss_kib(pid: int) -> int:
    return process_stats(pid)[1] // 1024


def _latency(data: str, at: float) -> float | None:
    """Milliseconds from the upstream's write (the delta's "t") to the client's read."""
    stamp = json.loads(data).get("t")
    return (at - stamp) / 1e6 if stamp is not None else None


async def one_stream(socket: Socket, delay: float = 0.0, result: Stream | None = None) -> Stream:
    """Start a run on a connected socket (after `delay` seconds) and read it to its end."""
    return await follow(socket, _latency, form=FORM, delay=delay, result=result)


async def level(pid: int, port: int, cookie: str, count: int, spread: float = 0.0) -> dict:
    """`count` streams through the worker `pid` listening on `port` (rtdash's, or the floor's)."""
    await one_stream(await Socket.connect(port, "/ws/playground/", cookie))  # warm-up
    await asyncio.sleep(1)
    baseline = rss_kib(pid)
    sockets = await asyncio.gather(
        *(Socket.connect(port, "/ws/playground/", cookie) for _ in range(count))
    )
    delays = [spread * index / count for index in range(count)]
    streams = [Stream() for _ in range(count)]
    tasks = [
        asyncio.ensure_future(one_stream(socket, delay, stream))
        for socket, delay, stream in zip(sockets, delays, streams, strict=True)
    ]
    peak = baseline
    cpu_before = process_stats(pid)[0]
    started = time.perf_counter()
    deadline = started + LEVEL_TIMEOUT_SECONDS
    while not all(task.done() for task in tasks) and time.perf_counter() < deadline:
        peak = max(peak, rss_kib(pid))
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    cpu = process_stats(pid)[0] - cpu_before
    for task in tasks:
        task.cancel()  # what never arrived by the deadline counts as lost
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [value for stream in streams for value in stream.latencies]
    lost = duplicated = disordered = undelivered = 0
    for stream in streams:
        missing, twice, out_of_order = sequence_faults(stream, EXPECTED)
        if stream.status:
            lost += missing  # the run ended and these never came
        else:
            undelivered += missing  # still on the way at the cut-off
        duplicated += twice
        disordered += out_of_order
    return {
        "streams": count,
        "spread": spread,
        "frames": len(latencies),
        "p50": percentile(latencies, 0.50),
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies, default=float("nan")),
        "lost": lost,
        "undelivered": undelivered,
        "duplicated": duplicated,
        "disordered": disordered,
        "completed": sum(stream.status == "completed" for stream in streams),
        "rss_per_stream": (peak - baseline) / count,
        "elapsed": elapsed,
        "cpu_percent": cpu / elapsed * 100,
        "cpu_per_frame_us": cpu / max(1, len(latencies)) * 1e6,
    }


async def _hold(socket: Socket) -> None:
    """Read an idle socket until it closes (answering the server's pings, as a browser does)."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while await socket.receive() is not None:
            pass


async def _connect_many(port: int, cookie: str, count: int) -> list[Socket]:
    sockets: list[Socket] = []
    while len(sockets) < count:
        batch = min(CONNECT_BATCH, count - len(sockets))
        sockets += await asyncio.gather(
            *(Socket.connect(port, "/ws/playground/", cookie) for _ in range(batch))
        )
    return sockets


async def idle_level(stack: Stack, cookie: str, count: int) -> dict:
    """`count` logged-in playground sockets held open and idle for the last of
    IDLE_SAMPLE_SECONDS, the worker's RSS read at each; then IDLE_PROBE_STREAMS of them start
    a run each, which must stream as usual (latency, nothing lost) with the others still open."""
    pid, port = stack.pids[0], stack.ports[0]
    await one_stream(await Socket.connect(port, "/ws/playground/", cookie))  # warm-up
    await asyncio.sleep(1)
    baseline = rss_kib(pid)
    connecting = time.perf_counter()
    sockets = await _connect_many(port, cookie, count)
    connect_seconds = time.perf_counter() - connecting
    holders = [asyncio.ensure_future(_hold(socket)) for socket in sockets]
    began = time.monotonic()
    cpu_before = process_stats(pid)[0]
    samples = []
    for at in IDLE_SAMPLE_SECONDS:
        await asyncio.sleep(max(0.0, began + at - time.monotonic()))
        samples.append((at, rss_kib(pid)))
    idle_cpu = process_stats(pid)[0] - cpu_before
    held_for = time.monotonic() - began
    dropped = sum(holder.done() for holder in holders)  # closed by the server while idle
    probes = []
    for socket, holder in zip(sockets[:IDLE_PROBE_STREAMS], holders, strict=False):
        holder.cancel()  # it waits for the next frame's first bytes: nothing is half read
        with contextlib.suppress(asyncio.CancelledError):
            await holder
        probes.append(socket)
    streams = await asyncio.gather(*(one_stream(socket) for socket in probes))
    latencies = [value for stream in streams for value in stream.latencies]
    lost = sum(sequence_faults(stream, EXPECTED)[0] for stream in streams)
    for socket in sockets[IDLE_PROBE_STREAMS:]:
        socket.close()
    await asyncio.gather(*holders, return_exceptions=True)
    await asyncio.sleep(2)
    return {
        "sockets": count,
        "connect_seconds": connect_seconds,
        "rss_per_socket": [(at, (rss - baseline) / count) for at, rss in samples],
        "baseline_mib": baseline / 1024,
        "after_close_mib": rss_kib(pid) / 1024,
        "idle_cpu_percent": idle_cpu / held_for * 100,
        "dropped": dropped,
        "probe_streams": len(streams),
        "probe_completed": sum(stream.status == "completed" for stream in streams),
        "probe_lost": lost,
        "probe_p50": percentile(latencies, 0.50),
        "probe_p95": percentile(latencies, 0.95),
    }


def measure_level(
    server: str,
    layer: str,
    count: int,
    spread: float = 0.0,
    *,
    idle: bool = False,
    profile: str = "",
) -> dict:
    """One level on a fresh stack: `count` streams (or, with `idle`, that many idle sockets,
    see idle_level). `profile`: a py-spy flame graph of the worker during it, to that file."""
    redis = RedisServer().start() if layer == "redis-pubsub" else None
    try:
        stack = Stack(server=server, **production(redis.url if redis else None))
        stack.simulator = StampServer()
        with stack:
            cookie = log_in(stack)[0]
            measure = (
                idle_level(stack, cookie, count)
                if idle
                else level(stack.pids[0], stack.ports[0], cookie, count, spread)
            )
            with Profiler(stack.pids[0], profile):
                row = asyncio.run(measure)
    finally:
        if redis is not None:
            redis.stop()
    row.update(server=server, layer=layer)
    return row


def measure_floor(count: int, spread: float = 0.0) -> dict:
    """The same level through the relay floor (bench.reference `relay`): a bare ASGI websocket
    relay in front of its own stamp server, nothing of rtdash in the path."""
    upstream = StampServer()
    upstream.start()
    try:
        with ReferenceServer("relay", upstream.url) as floor:
            row = asyncio.run(level(floor.process.pid, floor.port, "", count, spread))
    finally:
        upstream.stop()
    row.update(server="uvicorn", layer="floor (bare relay)")
    return row


class Profiler:
    """py-spy recording a process while the `with` block runs (nothing when `output` is '')."""

    def __init__(self, pid: int, output: str) -> None:
        self.pid, self.output = pid, output
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Profiler:
        if self.output:
            spy = Path(sys.executable).parent / "py-spy"
            command = [str(spy), "record", "--pid", str(self.pid), "--output", self.output]
            command += ["--rate", "250", "--nonblocking"]
            if self.output.endswith(".txt"):
                command += ["--format", "raw"]
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            self.process.wait(30)


def _stream_line(row: dict) -> str:
    starts = f"over {row['spread']:g} s" if row["spread"] else "at once"
    return (
        f"| {row['server']} | {row['layer']} | {row['streams']} | {starts} | "
        f"{row['p50']:.2f} | {row['p95']:.2f} | {row['p99']:.2f} | {row['max']:.1f} | "
        f"{row['lost']} | {row['undelivered']} | {row['duplicated']} | {row['disordered']} | "
        f"{row['completed']}/{row['streams']} | {row['cpu_percent']:.0f}% | "
        f"{row['cpu_per_frame_us']:.0f} µs | {row['rss_per_stream']:.0f} KiB |"
    )


def _floor_ratios(row: dict, floor: dict) -> str:
    ratios = [
        f"{name} {row[key] / floor[key]:.2f}x"
        for name, key in (
            ("p50", "p50"),
            ("p95", "p95"),
            ("p99", "p99"),
            ("CPU/frame", "cpu_per_frame_us"),
        )
    ]
    return ", ".join(ratios)


def _idle_line(row: dict) -> str:
    per_socket = ", ".join(f"{kib:.1f}" for _at, kib in row["rss_per_socket"])
    return (
        f"| {row['server']} | {row['layer']} | {row['sockets']} | "
        f"{row['connect_seconds']:.1f} s | {per_socket} KiB | {row['baseline_mib']:.0f} MiB | "
        f"{row['after_close_mib']:.0f} MiB | {row['idle_cpu_percent']:.1f}% | {row['dropped']} | "
        f"{row['probe_completed']}/{row['probe_streams']} | {row['probe_lost']} | "
        f"{row['probe_p50']:.2f} | {row['probe_p95']:.2f} |"
    )


STREAM_HEADER = (
    "| server | layer | streams | starts | p50 | p95 | p99 | max | lost | late | dup. "
    "| out of order | completed | worker CPU | CPU per frame | RSS per open stream |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)
IDLE_HEADER = (
    "| server | layer | idle sockets | to connect them | RSS per socket at "
    + " / ".join(f"{at} s" for at in IDLE_SAMPLE_SECONDS)
    + " | RSS before | after closing | worker CPU idle | closed by the server | runs on them "
    "completed | lost | p50 | p95 |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def enough_file_descriptors(sockets: int) -> None:
    """Raise this process's open-file limit (the workers it starts inherit it) to what
    `sockets` connections need on both ends, as far as the hard limit allows."""
    needed = sockets + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"{sockets} sockets need `ulimit -n {needed}` (the hard limit is {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def everything() -> None:
    """Every level of every configuration, and the idle sockets; writes bench/results.md."""
    load = os.getloadavg()[0]
    rows = []
    for server, layer in CONFIGS:
        rows += [measure_level(server, layer, count) for count in LEVELS]
        rows.append(measure_level(server, layer, 50, SPREAD_SECONDS))
    floor = measure_floor(max(LEVELS))
    enough_file_descriptors(IDLE_SOCKETS)
    idle_rows = [measure_level("uvicorn", layer, IDLE_SOCKETS, idle=True) for layer in IDLE_LAYERS]
    at_200 = {
        f"{row['server']}, {row['layer']}": row
        for row in rows
        if row["streams"] == 200 and row["server"] == "uvicorn"
    }
    lost = sum(row["lost"] for row in rows) + sum(row["probe_lost"] for row in idle_rows)
    lines = [
        "## Playground relay (`bench/relay.py`)",
        "",
        "Upstream frame → browser websocket frame through one worker (daphne or uvicorn, "
        "SQLite, debug off as deployed; the in-process channel layer of a single-worker "
        "install, or Redis pub/sub on a private redis-server). Each stream: "
        f"{STREAM_FRAMES} deltas {STREAM_INTERVAL_MS} ms apart from a timestamping upstream, "
        "started through `ws/playground/` as the page does, relayed to its sockets and "
        "recorded as usual; the streams start in the same instant unless spread. Latencies in "
        "milliseconds; lost = sequences missing from a finished run's stream; late = "
        f"sequences still on the way when a level is cut off after {LEVEL_TIMEOUT_SECONDS} s; "
        "CPU = the worker's.",
        "",
        STREAM_HEADER,
        *(_stream_line(row) for row in rows),
        _stream_line(floor),
        "",
        "The last row is the floor: the same streams through a bare ASGI websocket relay "
        "(`bench.reference` `relay`: httpx to the upstream, the frames split and sent on, no "
        "framework, database or channel layer). At 200 streams, uvicorn, against the floor: "
        + "; ".join(f"{name}: {_floor_ratios(row, floor)}" for name, row in at_200.items())
        + ".",
        "",
        f"Idle sockets (uvicorn): {IDLE_SOCKETS} logged-in `ws/playground/` sockets opened "
        f"{CONNECT_BATCH} at a time and held idle (answering the server's pings) for "
        f"{IDLE_SAMPLE_SECONDS[-1]} s; RSS per socket = (the worker's RSS minus its RSS before "
        "they opened) / sockets, read at each moment; then "
        f"{IDLE_PROBE_STREAMS} of them start a run each with the others still open.",
        "",
        IDLE_HEADER,
        *(_idle_line(row) for row in idle_rows),
        "",
        "**p95 at 200 streams on uvicorn: "
        + ", ".join(f"{row['p95']:.2f} ms ({name})" for name, row in at_200.items())
        + f"** (target < 10 ms); **lost frames at every level: {lost}** (target 0). "
        f"Load average when it started: {load:.2f} on {os.cpu_count()} cores; the "
        "timestamping upstream and the clients run on the same cores as the worker.",
    ]
    write_section("relay", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Without arguments: every level, into bench/results.md. With --server, "
        "--layer and --streams (or --idle): that one level, printed."
    )
    parser.add_argument("--server", choices=("daphne", "uvicorn"))
    parser.add_argument("--layer", choices=("in-memory", "redis-pubsub"))
    parser.add_argument("--streams", type=int, help="concurrent streams")
    parser.add_argument("--spread", type=float, default=0.0, help="start them over S seconds")
    parser.add_argument("--idle", type=int, metavar="N", help="hold N idle sockets instead")
    parser.add_argument("--profile", default="", metavar="FILE", help="py-spy the worker to FILE")
    parser.add_argument("--rounds", type=int, default=1, help="measure the level this many times")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="each round, the same streams through a bare ASGI relay first (bench.reference)",
    )
    args = parser.parse_args()
    if args.server is None and args.layer is None and args.streams is None and args.idle is None:
        everything()
        return
    if not args.server or not args.layer or (args.streams is None) == (args.idle is None):
        parser.error("one level needs --server, --layer and either --streams or --idle")
    enough_file_descriptors(args.idle or args.streams)
    load = os.getloadavg()
    for _ in range(args.rounds):
        if args.idle:
            row = measure_level(args.server, args.layer, args.idle, idle=True, profile=args.profile)
            line = _idle_line(row)
        else:
            if args.floor:
                floor = measure_floor(args.streams, args.spread)
                print(_stream_line(floor), flush=True)
            row = measure_level(
                args.server, args.layer, args.streams, args.spread, profile=args.profile
            )
            line = _stream_line(row)
        print(line, flush=True)
        if args.floor and not args.idle:
            print("rtdash against the floor:", _floor_ratios(row, floor), flush=True)
    print(f"load average at the start: {' / '.join(f'{v:.2f}' for v in load)}")


if __name__ == "__main__":
    main()
