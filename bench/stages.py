"""Where a run's time goes inside rtdash: each step of the run path, timed in a live worker.

    .venv/bin/python -m bench.stages          # the floor's rounds (bench/gateway.py --floor)

The worker is rtdash under uvicorn, as in the floor bench, with probes around the steps of a
run: each probe notes when its step starts and ends, in microseconds from the request's
arrival at the run endpoint. The rounds are the floor bench's (a JSON run, then a short
stream's first byte; the ratio lines are printed as it prints them), and the median of each
probe over the runs is printed for each kind, in the order the steps happen, with the gap
from the step before. The probes cost a microsecond or two each, so the totals run a little
above the floor bench's; the gaps are what to read. py-spy samples where the CPU goes; this
shows what a request waits for, and in which order (the stream's first byte waiting behind
its reader was found this way: docs/performance.md).

Prints; writes nothing to bench/results.md.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import statistics
import sys
import tempfile
import time

OUT_VARIABLE = "RTDASH_BENCH_STAGES_OUT"
# Runs left out at the start of each kind: connections, caches and imports warm up.
WARMUP_RUNS = 30

_marks: list[tuple[str, float]] = []
_runs: dict[str, list[list[tuple[str, float]]]] = {"JSON": [], "stream": []}


def _mark(label: str) -> None:
    _marks.append((label, time.perf_counter()))


def _probe(owner, name: str, label: str) -> None:
    """Note `label >` as owner.name starts and `label <` as it returns."""
    original = getattr(owner, name)
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def probed(*args, **kwargs):
            _mark(label + " >")
            result = await original(*args, **kwargs)
            _mark(label + " <")
            return result

    else:

        @functools.wraps(original)
        def probed(*args, **kwargs):
            _mark(label + " >")
            result = original(*args, **kwargs)
            _mark(label + " <")
            return result

    setattr(owner, name, probed)


def _medians(runs: list[list[tuple[str, float]]]) -> list[tuple[str, float, int]]:
    """Each label's median time (its first mark in a run), over the runs that have it."""
    times: dict[str, list[float]] = {}
    for marks in runs[WARMUP_RUNS:]:
        start = marks[0][1]
        seen = set()
        for label, at in marks:
            if label not in seen:
                seen.add(label)
                times.setdefault(label, []).append((at - start) * 1e6)
    rows = [(label, statistics.median(values), len(values)) for label, values in times.items()]
    return sorted(rows, key=lambda row: row[1])


def _write_medians() -> None:
    result = {kind: _medians(runs) for kind, runs in _runs.items()}
    with open(os.environ[OUT_VARIABLE], "w") as out:
        json.dump(result, out)


def _install_probes():
    """The probes, in the worker; returns its ASGI application."""
    from rtdash import asgi, gateway_handler, run_endpoint
    from runs.core import sql, upstream
    from runs.gateway import auth, views
    from runs.pipeline import reader, start

    endpoint_call = run_endpoint.RunEndpoint.__call__

    async def timed_run(self, scope, receive, send, route):
        _marks.clear()
        _mark("arrived")
        body_sent = False

        async def timed_send(message):
            nonlocal body_sent
            if message["type"] == "http.response.start":
                _mark("response start sent >")
            elif not body_sent and message.get("body"):
                body_sent = True
                _mark("first body byte sent >")
            await send(message)

        await endpoint_call(self, scope, receive, timed_send, route)
        _mark("done (after the close hop)")
        kind = "stream" if any(label == "first upstream chunk" for label, _ in _marks) else "JSON"
        _runs[kind].append(list(_marks))
        if sum(len(runs) for runs in _runs.values()) % 50 == 0:
            _write_medians()

    run_endpoint.RunEndpoint.__call__ = timed_run
    _probe(run_endpoint, "read_bounded_body", "body read")
    _probe(views, "answer_run", "view")
    _probe(views, "_prepare_run", "prepare (sync thread)")
    _probe(gateway_handler, "send_deferred_request_started", "  request_started")
    _probe(auth, "find_usable_token", "  token")
    _probe(start, "start_run", "  the run's row")
    _probe(sql, "insert", "    INSERT")
    _probe(upstream, "open_stream", "upstream: sent, to its headers")
    _probe(start, "json_outcome", "JSON outcome")
    _probe(views, "_passthrough", "JSON response built")
    _probe(views, "_stream", "stream response built")
    _probe(reader.RunReader, "_final_frame_seen", "stream's end examined")
    _probe(gateway_handler.GatewayASGIHandler, "send_response", "send_response")
    take = reader.RunReader._take

    async def timed_take(self, chunk):
        if self.outcome.first_byte_at is None:
            _mark("first upstream chunk")
        await take(self, chunk)

    reader.RunReader._take = timed_take
    # The probes run in the sync thread too: views and the gateway handler call them by the
    # names they imported.
    views.send_deferred_request_started = gateway_handler.send_deferred_request_started
    return asgi.application


if os.environ.get(OUT_VARIABLE):
    application = _install_probes()


def main() -> None:
    from bench import gateway, harness

    worker_command = harness.worker_command

    def probed_worker(server: str, port: int) -> list[str]:
        command = worker_command(server, port)
        app = "bench.stages:application"
        return [app if part.endswith(":application") else part for part in command]

    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "stages.json")
        os.environ[OUT_VARIABLE] = out
        harness.worker_command = probed_worker
        gateway.write_section = lambda _name, text: print(
            "\n".join(line for line in text.splitlines() if line.startswith("**"))
        )
        gateway.floor_only()
        with open(out) as result:
            medians = json.load(result)
    for kind, rows in medians.items():
        print(f"\n{kind} run, median µs from arrival (gap from the step before), n runs")
        previous = 0.0
        for label, at, count in rows:
            print(f"  {label:34} {at:8.0f}  (+{at - previous:5.0f})  n={count}")
            previous = at


if __name__ == "__main__":
    sys.exit(main())
