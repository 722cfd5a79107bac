"""Load: 200 concurrent streamed runs through the gateway and, at the same time, 200 playground
websockets each starting and watching a streamed run, on one worker and on two, under daphne
and under uvicorn. Frames lost, errors, frame latency, memory and CPU per worker.

Gateway runs are not relayed to a channel group (only playground runs are), so the viewers
are playground sockets, as the page opens them: a logged-in session cookie, `ws/playground/`
with an Origin header, `{"action": "start", "form": ...}`, then the run's frames to its end.
With two workers the gateway streams and the sockets alternate between the workers, and every
WATCH_EVERY-th run started on one worker is also watched from the other through
`ws/runs/<id>/`: those frames cross workers through the Redis channel layer.

Latency is measured end to end: the simulator stamps each frame with the time it left
(`metadata.simulate.stampFrames`, `"sentAt"`, wall clock) and the client subtracts it on
arrival (same clock). PostgreSQL and Redis are used when they are there (PostgreSQL on
127.0.0.1:5432; a redis-server of the bench's own, see harness.RedisServer), otherwise SQLite
and one process's memory. Each configuration gets a fresh database, a warm-up round at a
tenth of the load (not reported) and then the measured round, cut off after
ROUND_TIMEOUT_SECONDS. daphne runs with its defaults apart from the listen backlog, so its
5 s websocket handshake timeout (--websocket_connect_timeout) applies: a socket the
application has not accepted by then is refused.

    .venv/bin/python -m bench.load
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx
from httpx_sse import EventSource

from bench._results import write_section
from bench.harness import RedisServer, Stack, process_stats, production, summary
from bench.ws import Socket, Stream, follow, log_in, sequence_faults

STREAMS = 200  # gateway streams
VIEWERS = 200  # playground websockets, each starting and watching its own run
DELTAS = 50
DRIP_MS = 20
# The same runs at a gentler pace, on two workers: 2 frames a second per stream instead of 50
# (the full pace is about ten times what this 2-core machine can carry).
PACED_DRIP_MS = 500


def _simulate(drip_ms: int) -> dict:
    return {"deltas": DELTAS, "dripMs": drip_ms, "stampFrames": True}


def _body(drip_ms: int) -> dict:
    return {
        "agent": "support-chat",
        "prompt": "Load test",
        "metadata": {"simulate": _simulate(drip_ms)},
    }


def _form(drip_ms: int) -> dict:
    return {
        "agent": "support-chat",
        "prompt": "Load test",
        "stream": "on",
        "meta_key": ["simulate"],
        "meta_value": [json.dumps(_simulate(drip_ms))],
    }


# run_started, the deltas, assistant_message and run_completed.
EXPECTED_FRAMES = DELTAS + 3
# With two workers, every WATCH_EVERY-th playground run is also watched from the other worker.
WATCH_EVERY = 10
# A round that has not finished by then is cut off: what never arrived counts as late.
# 60 s for runs that take 1 s when nothing waits: past that nothing is live, and the four
# configurations stay within about 5 minutes.
ROUND_TIMEOUT_SECONDS = 60
# The warm-up round (imports, database and Redis connections, the upstream pool) runs this
# fraction of the load: a full-load warm-up would double the time of a one-worker round
# (about 100 s at this load), and the bench must stay under about 5 minutes.
WARM_UP_FRACTION = 0.1
# One worker carries all 400 runs at once. With the default pool of 200 upstream connections
# per worker the playground runs took all 200 and the gateway's requests waited for a slot
# until the pool timeout (RTDASH_UPSTREAM_CONNECT_TIMEOUT, 5 s): 200 of 200 gateway streams
# failed with 502 upstream_timeout. The bench sizes the pool for its load, as a deployment
# carrying that many concurrent runs per worker must.
UPSTREAM_CONNECTIONS = STREAMS + VIEWERS
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "rtdash_bench_load"
SENT_AT = '"sentAt":'


def _fresh_postgres() -> str | None:
    if not shutil.which("psql"):
        return None
    for sql in (f"DROP DATABASE IF EXISTS {BENCH_DB}", f"CREATE DATABASE {BENCH_DB}"):
        if subprocess.run(["psql", PG_ADMIN, "-qc", sql], capture_output=True).returncode:
            return None
    return f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}"


def _latency(data: str, at: float) -> float | None:
    """Milliseconds from the simulator's write to this client's read. The stamp is the last
    field of each frame's JSON; reading it without a JSON parse keeps the client from being
    what this benchmark measures."""
    stamp = data.rfind(SENT_AT)
    if stamp < 0:
        return None
    return (at - float(data[stamp + len(SENT_AT) :].rstrip("}\n "))) * 1000


@dataclass
class GatewayStream:
    frames: int = 0
    error: str = ""
    done: bool = False
    latencies: list[float] = field(default_factory=list)


# Shared by the gateway streams' clients: loading the CA bundle 200 times takes seconds.
_TLS = ssl.create_default_context()


def _script_client() -> httpx.AsyncClient:
    """One gateway stream's own client, as each script that calls the gateway has its own.
    With one client and a pool of 400 connections for every stream, httpcore went through
    the whole pool at each request and at each close: when a round's 200 streams ended
    together, the client spent a second doing that (py-spy on the client) while every socket's
    frames waited in it, and that wait was counted as rtdash's latency at the tail."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncClient(timeout=ROUND_TIMEOUT_SECONDS, limits=limits, verify=_TLS)


async def _gateway_stream(
    client: httpx.AsyncClient,
    url: str,
    token: str,
    result: GatewayStream,
    body: dict | None = None,
):
    try:
        async with client.stream(
            "POST", url + "/v1/run", json=body or _body(DRIP_MS), headers={"X-API-Key": token}
        ) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:120]!r}"
                return
            async for event in EventSource(response).aiter_sse():
                result.frames += 1
                latency = _latency(event.data, time.time())
                if latency is not None:
                    result.latencies.append(latency)
        result.done = True
    except asyncio.CancelledError:
        raise
    except Exception as error:
        result.error = f"{type(error).__name__}: {error}"


@dataclass
class Viewer:
    stream: Stream = field(default_factory=Stream)
    error: str = ""
    # For a watcher that joins a run in progress, each frame written before its socket opened
    # (its catch-up), apart from the live frames' latency: (ms since the frame was written,
    # ms since the socket opened) at its arrival.
    catch_up: list[tuple[float, float]] = field(default_factory=list)


def _joiner_latency(viewer: Viewer, opened: float):
    """Latency for a socket opened at `opened` (wall clock): a frame written before then
    could not have reached it earlier, so its wait is counted from `opened`, in `catch_up`,
    not as live latency."""

    def latency(data: str, at: float) -> float | None:
        value = _latency(data, at)
        if value is None:
            return None
        if at - value / 1000 < opened:
            viewer.catch_up.append((value, (at - opened) * 1000))
            return None
        return value

    return latency


async def _viewer(port: int, path: str, cookie: str, result: Viewer, **follow_args) -> None:
    try:
        socket = await Socket.connect(port, path, cookie, clock=time.time)
        latency = _joiner_latency(result, time.time())
        await follow(socket, latency, result=result.stream, **follow_args)
        result.error = _outcome_error(result.stream)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        result.error = f"{type(error).__name__}: {error}"


def _outcome_error(stream: Stream) -> str:
    """'' for a run that finished completed, else why it did not (called once `follow` has
    returned: a cut-off cancels it first)."""
    if stream.status == "completed":
        return ""
    if not stream.status:
        return "the socket closed before the run finished"
    finished = stream.finished
    return (
        f"run ended {stream.status} ({finished.get('errorCode')}: "
        f"{finished.get('errorMessage')}, HTTP {finished.get('httpStatus')})"
    )


def _viewer_figures(viewers: list[Viewer]) -> dict:
    lost = late = unfinished = duplicated = disordered = 0
    for viewer in viewers:
        missing, twice, out_of_order = sequence_faults(viewer.stream, EXPECTED_FRAMES)
        if viewer.stream.status == "completed":
            lost += missing  # the run ended and these never came
        elif not viewer.error:
            late += missing  # still on the way at the cut-off
            unfinished += 1
        duplicated += twice
        disordered += out_of_order
    errors = [viewer.error for viewer in viewers if viewer.error]
    return {
        "count": len(viewers),
        "lost": lost + duplicated + disordered,
        "late": late,
        "unfinished": unfinished,
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:3],
        "latency": summary([value for v in viewers for value in v.stream.latencies]),
        "max": max((value for v in viewers for value in v.stream.latencies), default=0.0),
        "catch_up": [value for v in viewers for value in v.catch_up],
        "live": [value for v in viewers for value in v.stream.latencies],
    }


async def _round(
    stack: Stack, cookies: list[str], fraction: float = 1.0, drip_ms: int = DRIP_MS
) -> dict:
    streams, viewers_count = round(STREAMS * fraction), round(VIEWERS * fraction)
    ports, urls = stack.ports, stack.urls
    workers = len(ports)
    gateway = [GatewayStream() for _ in range(streams)]
    viewers = [Viewer() for _ in range(viewers_count)]
    watchers: list[Viewer] = []
    watcher_tasks: list[asyncio.Task] = []

    def watch_from_the_other_worker(index: int):
        def started(run_id: int) -> None:
            watcher = Viewer()
            watchers.append(watcher)
            port = ports[(index + 1) % workers]
            watcher_tasks.append(
                asyncio.ensure_future(_viewer(port, f"/ws/runs/{run_id}/", cookies[index], watcher))
            )

        return started if workers > 1 and index % WATCH_EVERY == 0 else None

    # Sockets open first (a page is loaded before its Run button is pressed); then every
    # gateway stream and every socket's run starts in the same instant.
    sockets = await asyncio.gather(
        *(
            Socket.connect(ports[index % workers], "/ws/playground/", cookies[index], time.time)
            for index in range(viewers_count)
        ),
        return_exceptions=True,
    )

    async def start_viewer(index: int) -> None:
        socket, viewer = sockets[index], viewers[index]
        if isinstance(socket, BaseException):
            viewer.error = f"connect: {type(socket).__name__}: {socket}"
            return
        try:
            await follow(
                socket,
                _latency,
                form=_form(drip_ms),
                result=viewer.stream,
                on_started=watch_from_the_other_worker(index),
            )
            viewer.error = _outcome_error(viewer.stream)
        except Exception as error:
            viewer.error = f"{type(error).__name__}: {error}"

    pids = stack.pids
    others = {"client": os.getpid(), "simulator": stack.simulator.pid}
    before = [process_stats(pid)[0] for pid in pids]
    before_others = {name: process_stats(pid)[0] for name, pid in others.items()}
    peak = [process_stats(pid)[1] for pid in pids]
    started = time.monotonic()
    deadline = started + ROUND_TIMEOUT_SECONDS
    async with contextlib.AsyncExitStack() as clients:
        tasks = [
            asyncio.ensure_future(
                _gateway_stream(
                    await clients.enter_async_context(_script_client()),
                    urls[index % workers],
                    stack.token,
                    gateway[index],
                    _body(drip_ms),
                )
            )
            for index in range(streams)
        ]
        tasks += [asyncio.ensure_future(start_viewer(index)) for index in range(viewers_count)]
        while time.monotonic() < deadline:
            if all(task.done() for task in tasks + watcher_tasks):
                break
            peak = [max(p, process_stats(pid)[1]) for p, pid in zip(peak, pids, strict=True)]
            await asyncio.sleep(0.1)
        wall = time.monotonic() - started
        for task in tasks + watcher_tasks:
            task.cancel()  # what never arrived by the deadline counts as late
        await asyncio.gather(*tasks, *watcher_tasks, return_exceptions=True)
    after = [process_stats(pid)[0] for pid in pids]
    after_others = {name: process_stats(pid)[0] for name, pid in others.items()}
    gateway_latencies = [value for stream in gateway for value in stream.latencies]
    finished = [stream for stream in gateway if stream.done]
    return {
        "gateway": {
            "count": streams,
            "lost": sum(EXPECTED_FRAMES - stream.frames for stream in finished),
            "late": sum(
                EXPECTED_FRAMES - stream.frames
                for stream in gateway
                if not stream.done and not stream.error
            ),
            "unfinished": sum(not stream.done and not stream.error for stream in gateway),
            "errors": sum(bool(stream.error) for stream in gateway),
            "error_samples": sorted({stream.error for stream in gateway if stream.error})[:3],
            "latency": summary(gateway_latencies),
            "max": max(gateway_latencies, default=0.0),
        },
        "viewers": _viewer_figures(viewers),
        "watchers": _viewer_figures(watchers) if watchers else None,
        "wall": wall,
        "cpu": [(b - a) / wall * 100 for a, b in zip(before, after, strict=True)],
        "cpu_seconds": sum(b - a for a, b in zip(before, after, strict=True)),
        "frames": sum(stream.frames for stream in gateway)
        + sum(len(v.stream.sequences) for v in viewers + watchers),
        "rss": [value / 2**20 for value in peak],
        "others_cpu": {
            name: (after_others[name] - before_others[name]) / wall * 100 for name in others
        },
    }


def _measure(server: str, workers: int, drip_ms: int = DRIP_MS, postgres: bool = True) -> dict:
    """One configuration. `postgres=False`: SQLite, with Redis all the same (a machine whose
    PostgreSQL is shared with other work must not carry this load)."""
    database_url = _fresh_postgres() if postgres else None
    wants_redis = (database_url or not postgres) and shutil.which("redis-server")
    redis = RedisServer().start() if wants_redis else None
    env = {"RTDASH_UPSTREAM_MAX_CONNECTIONS": str(UPSTREAM_CONNECTIONS)}
    if redis:
        env.update(production(redis.url))
    try:
        with Stack(
            server=server, workers=workers, database_url=database_url if redis else None, **env
        ) as stack:
            cookies = log_in(stack, VIEWERS)
            # Warm-up, not reported (at the full pace: it only has to touch every path).
            asyncio.run(_round(stack, cookies, WARM_UP_FRACTION))
            result = asyncio.run(_round(stack, cookies, drip_ms=drip_ms))
    finally:
        if redis is not None:
            redis.stop()
    result.update(
        server=server,
        workers=workers,
        backing=bool(redis) and postgres,
        pace=1000 // drip_ms,
    )
    print(
        f"{server} x{workers}: {result['wall']:.1f} s, gateway {result['gateway']}, "
        f"viewers {_brief(result['viewers'])}, watchers {_brief(result['watchers'])}",
        flush=True,
    )
    return result


def _brief(figures: dict | None) -> dict | None:
    """A configuration's figures without the raw lists, for the progress line."""
    if figures is None:
        return None
    return {name: value for name, value in figures.items() if name not in ("catch_up", "live")}


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _catch_up_line(r: dict) -> str:
    """What the watchers' figures leave out: the frames written before each watcher's socket
    opened, which reach it by catch-up."""
    catch_up = r["watchers"]["catch_up"]
    if not catch_up:
        return ""
    ages = summary([age for age, _ in catch_up])
    waits = summary([wait for _, wait in catch_up])
    live = r["watchers"]["latency"]
    every = summary([age for age, _ in catch_up] + r["watchers"]["live"])
    return (
        f"{r['server']} x{r['workers']}, {r['pace']} frames/s: {len(catch_up)} of the "
        f"watchers' frames were written before their socket opened (their catch-up): they "
        f"arrived {_ms(waits['p50'])} ms (p50) / {_ms(waits['p95'])} ms (p95) after it opened, "
        f"{_ms(ages['p50'])} / {_ms(ages['p95'])} ms after they were written. Counted with "
        f"the live frames, as before, the watchers' p50 / p95 / p99 would be "
        f"{_ms(every['p50'])} / {_ms(every['p95'])} / {_ms(every['p99'])} ms; live frames "
        f"alone: {_ms(live['p50'])} / {_ms(live['p95'])} / {_ms(live['p99'])} ms."
    )


def watchers_only() -> None:
    """`--watchers`: only the paced round on two uvicorn workers (target 4 of issue 18), on
    SQLite with a Redis of its own, in a section of its own."""
    load = os.getloadavg()
    r = _measure("uvicorn", 2, PACED_DRIP_MS, postgres=False)
    rows = []
    for kind, figures in (
        ("gateway streams", r["gateway"]),
        ("playground sockets", r["viewers"]),
        ("watchers on the other worker (live frames)", r["watchers"]),
    ):
        latency = figures["latency"]
        rows.append(
            f"| {kind} | {figures['count']} | {figures['lost']} | {figures['late']} | "
            f"{figures['errors']} | {_ms(latency['p50'])} | {_ms(latency['p95'])} | "
            f"{_ms(latency['p99'])} | {_ms(figures['max'])} |"
        )
    write_section(
        "load-watchers",
        "\n".join(
            [
                "## Watchers on another worker (`bench/load.py --watchers`)",
                "",
                f"The paced round of `bench/load.py` alone: {STREAMS} gateway streams and "
                f"{VIEWERS} playground sockets on two uvicorn workers, {1000 // PACED_DRIP_MS} "
                f"frames a second per run, every {WATCH_EVERY}th playground run also watched "
                "from the other worker; SQLite and a Redis of the bench's own (a PostgreSQL "
                "shared with other work must not carry this load). A watcher's latency counts "
                "the frames written after its socket opened; the ones written before reach it "
                "by catch-up and are counted apart, below. Load average (1 / 5 / 15 min) "
                f"{' / '.join(f'{v:.1f}' for v in load)} at the start.",
                "",
                "| clients | n | frames lost | late | errors | p50 | p95 | p99 | max |",
                "|---|---|---|---|---|---|---|---|---|",
                *rows,
                "",
                _catch_up_line(r),
            ]
        ),
    )


def main() -> None:
    if "--watchers" in sys.argv[1:]:
        watchers_only()
        return
    load = os.getloadavg()
    began = time.monotonic()
    results = [_measure(server, workers) for server in ("daphne", "uvicorn") for workers in (1, 2)]
    results += [_measure(server, 2, PACED_DRIP_MS) for server in ("daphne", "uvicorn")]
    backing = "PostgreSQL + Redis" if all(r["backing"] for r in results) else "SQLite"
    traffic, resources = [], []
    for r in results:
        kinds = [
            ("gateway streams", r["gateway"]),
            ("playground sockets", r["viewers"]),
        ]
        if r["watchers"]:
            kinds.append(("watchers on the other worker (live frames)", r["watchers"]))
        for kind, figures in kinds:
            latency = figures["latency"]
            traffic.append(
                f"| {r['server']} | {r['workers']} | {r['pace']} | {kind} | {figures['count']} | "
                f"{figures['lost']} | {figures['late']} ({figures['unfinished']}) | "
                f"{figures['errors']} | "
                f"{_ms(latency['p50'])} | {_ms(latency['p95'])} | {_ms(latency['p99'])} | "
                f"{_ms(figures['max'])} |"
            )
        resources.append(
            f"| {r['server']} | {r['workers']} | {r['pace']} | {r['wall']:.1f} | "
            f"{', '.join(f'{m:.0f}' for m in r['rss'])} | "
            f"{', '.join(f'{c:.0f}%' for c in r['cpu'])} | "
            f"{r['cpu_seconds'] / max(1, r['frames']) * 1e6:.0f} µs | "
            f"{r['others_cpu']['simulator']:.0f}% | {r['others_cpu']['client']:.0f}% |"
        )
    errors = [
        f"{r['server']} x{r['workers']}: {sample}"
        for r in results
        for figures in (r["gateway"], r["viewers"], r["watchers"] or {})
        for sample in figures.get("error_samples", [])
    ]
    markdown = "\n".join(
        [
            "## Load (`bench/load.py`)",
            "",
            f"At the same time: {STREAMS} streamed runs through the gateway (`POST /v1/run`) "
            f"and {VIEWERS} playground websockets (`ws/playground/`, logged in, each starting "
            f"a run and reading it to its end), every run {DELTAS} deltas {DRIP_MS} ms apart "
            f"({EXPECTED_FRAMES} frames; {1000 // DRIP_MS} a second), all started in the same "
            f"instant, on {backing} "
            "(the Redis pub/sub channel layer that `REDIS_URL` configures). With two workers "
            "both kinds alternate between the workers, and every "
            f"{WATCH_EVERY}th playground run is also watched from the other worker through "
            "`ws/runs/<id>/` (its frames cross workers through Redis; the watcher joins when "
            "the run has started, so its first frames come from catch-up, not live: they are "
            "counted apart, below the table). "
            "Each configuration: a fresh database, a warm-up round at "
            f"{WARM_UP_FRACTION:.0%} of the load, then the measured round. Each worker may open "
            f"{UPSTREAM_CONNECTIONS} connections to the upstream "
            "(`RTDASH_UPSTREAM_MAX_CONNECTIONS`; with the default 200, one worker's 200 "
            "playground runs held them all and the 200 gateway streams failed after the 5 s "
            "pool timeout). Then the same 400 runs on two workers at a gentler pace: deltas "
            f"{PACED_DRIP_MS} ms apart ({1000 // PACED_DRIP_MS} frames a second per run). "
            "Workers run as deployed: debug off.",
            "",
            "Latency: the simulator's stamp on each frame → the client's read of it, through "
            "rtdash (ms). Lost = frames missing, duplicated or out of order in a run that "
            "finished `completed` (a run that ended otherwise is an error, its reason below); "
            "late = frames still on the way when a round is cut off after "
            f"{ROUND_TIMEOUT_SECONDS} s (in brackets, runs not finished by then); errors = "
            "requests or sockets refused, failed, or runs not `completed`.",
            "",
            "| server | workers | frames/s per run | clients | n | frames lost | late | errors "
            "| p50 | p95 | p99 | max |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *traffic,
            "",
            *(f"{line}\n" for r in results if r["watchers"] and (line := _catch_up_line(r))),
            "Resources during the measured round: RSS is each worker's peak resident size; "
            "CPU is each worker's share of one core over the round's wall time, and per frame "
            "the workers' CPU time over every frame the clients received (gateway and "
            "websocket alike: the cost of the same work, whatever else the machine was doing); "
            "the simulator (the upstream), PostgreSQL, Redis and the load-generating client "
            "run on the same 2 cores.",
            "",
            "| server | workers | frames/s per run | wall s | RSS MiB | worker CPU "
            "| worker CPU per frame | simulator CPU | client CPU |",
            "|---|---|---|---|---|---|---|---|---|",
            *resources,
            "",
            f"Load average when it started: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min) on "
            f"{os.cpu_count()} cores, with other work on the machine; the whole benchmark "
            f"took {time.monotonic() - began:.0f} s."
            + (f" Errors seen: {'; '.join(errors)}." if errors else ""),
        ]
    )
    write_section("load", markdown)


if __name__ == "__main__":
    main()
