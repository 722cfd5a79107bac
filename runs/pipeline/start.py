"""Starting a run: the front half of a run's one path, for the gateway, the playground and
the demo alike.

`prepare` checks the key and the budget and records the Run; `send` sends it upstream and
records what comes back: a stream is handed to a RunReader, anything else is finished here.
`launch` is both, for callers that have nothing else to do in between. The gateway calls the
two steps itself: it prepares in the same database trip as its token lookup and has a JSON
run's record finished after its response has left (`after_response`).

Timings, measured on one monotonic clock from the request's receipt (`received`):
overhead is receipt → sent upstream, upstream time is sent → the upstream's last byte, and
duration is receipt → the finish step, so overhead + upstream time ≤ duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx
from django.conf import settings
from django.utils import timezone

from runs.core import sync_thread, upstream
from runs.core.crypto import SealedKey
from runs.core.upstream import UpstreamError
from runs.core.validation import RunRequest
from runs.models import Run, Team
from runs.pipeline.budgets import admitting
from runs.pipeline.reader import IN_FLIGHT, READERS, RunReader, Sink
from runs.pipeline.recording import RunOutcome, error_outcome, finish_run, json_outcome, start_run


class NoRunToolsKey(Exception):
    """The team has no usable RunTools key."""


@dataclass(frozen=True)
class Receipt:
    """When rtdash received a run: the wall-clock time it is recorded under, and the
    monotonic instant its overhead and duration are measured from."""

    at: datetime
    clock: float

    @classmethod
    def now(cls) -> Receipt:
        return cls(at=timezone.now(), clock=time.perf_counter())


@dataclass
class Prepared:
    """A recorded run, ready to send: its row (status `running`) and the team's sealed key."""

    run: Run
    runtools_key: SealedKey
    receipt: Receipt


@dataclass
class Launch:
    """A sent run: streaming (`reader` is reading it) or over (`outcome`).

    `error` is set when the upstream could not be reached or broke before its body was read;
    `response` and `body` are the upstream's answer otherwise (a stream's body is the reader's).
    """

    run: Run
    reader: RunReader | None = None
    outcome: RunOutcome | None = None
    body: bytes = b""
    response: httpx.Response | None = None
    error: UpstreamError | None = None


def prepare(
    team: Team,
    run_request: RunRequest,
    *,
    source: str,
    receipt: Receipt,
    user=None,
    token_id: int | None = None,
    legacy_path: bool = False,
    runtools_key: SealedKey | None = None,
    has_budget: bool = True,
) -> Prepared:
    """Check the budget and the key, then record the Run. Raises BudgetExceeded,
    NoRunToolsKey or KeyDecryptionError before anything is recorded.

    A caller that has already found and checked the team's key (the gateway, in its token
    query) passes it as `runtools_key`, and `has_budget=False` when it knows the team has no
    budget to enforce.
    """
    # Raises BudgetExceeded; the run's member and token have budgets of their own. The check
    # and the run's record are one step (`admitting`): a burst is refused as a series is.
    budgets_held = (
        admitting(team, run_request.agent, user_id=getattr(user, "pk", None), token_id=token_id)
        if has_budget
        else contextlib.nullcontext()
    )
    with budgets_held:
        return _record(
            team, run_request, source, receipt, user, token_id, legacy_path, runtools_key
        )


def _record(
    team: Team,
    run_request: RunRequest,
    source: str,
    receipt: Receipt,
    user,
    token_id: int | None,
    legacy_path: bool,
    runtools_key: SealedKey | None,
) -> Prepared:
    if runtools_key is None:
        key = team.default_key()
        if key is None:
            raise NoRunToolsKey("The team has no RunTools key; an owner can add one in Settings.")
        # Sealed until runs.core.upstream puts it on the request; checked now
        # (KeyDecryptionError) so an unreadable key refuses the run before it is recorded.
        runtools_key = SealedKey(key.ciphertext)
        runtools_key.check()
    run = start_run(
        team,
        run_request,
        source=source,
        user=user,
        token_id=token_id,
        legacy_path=legacy_path,
        started_at=receipt.at,
    )
    return Prepared(run=run, runtools_key=runtools_key, receipt=receipt)


async def launch(
    team: Team,
    run_request: RunRequest,
    *,
    source: str,
    user=None,
    token=None,
    sinks: list[Sink] | None = None,
) -> Launch:
    """Create the Run, send it upstream and either start its reader or finish it.

    Raises BudgetExceeded or NoRunToolsKey before anything is recorded or sent.
    """
    receipt = Receipt.now()
    prepared = await sync_thread.call(
        prepare,
        team,
        run_request,
        source=source,
        receipt=receipt,
        user=user,
        token_id=token.pk if token is not None else None,
    )
    return await send(prepared, run_request, sinks=sinks)


async def send(
    prepared: Prepared,
    run_request: RunRequest,
    *,
    path: str = "/run",
    sinks: list[Sink] | None = None,
    after_response: Callable[[Callable[[], None]], None] | None = None,
) -> Launch:
    """Send a prepared run upstream and record what comes back.

    A 200 event stream is handed to a RunReader (which finishes the run when it ends); any
    other answer, or none, is finished here: at once, or, given `after_response` (which runs
    a callback once the caller's response has left), after that (then the returned run is
    still `running`).
    """
    run = prepared.run
    IN_FLIGHT.add(run.pk)
    try:
        launched = await _send(prepared, run_request, path, sinks or [])
    except BaseException:
        IN_FLIGHT.discard(run.pk)
        raise
    if launched.reader is not None:
        return launched  # the reader finishes the run and takes it out of IN_FLIGHT
    outcome = launched.outcome
    assert outcome is not None
    if after_response is not None:
        after_response(functools.partial(_finish_later, run.pk, outcome))
        return launched
    try:
        launched.run = await sync_thread.call(finish_run, run.pk, outcome)
    finally:
        IN_FLIGHT.discard(run.pk)
    return launched


async def _send(
    prepared: Prepared, run_request: RunRequest, path: str, sinks: list[Sink]
) -> Launch:
    run, received = prepared.run, prepared.receipt.clock
    sent = time.perf_counter()
    # rtdash's own share of the run's time: the request's receipt to its send upstream.
    overhead_ms = (sent - received) * 1000
    accept = "text/event-stream" if run_request.stream else "application/json"
    # A run answered as JSON says nothing until it has ended, so it may be silent as long as
    # any run may last; a stream's silences are bounded by RTDASH_UPSTREAM_READ_TIMEOUT.
    silence = None if run_request.stream else settings.RTDASH_MAX_RUN_SECONDS
    try:
        response = await upstream.open_stream(
            prepared.runtools_key,
            "POST",
            path,
            content=run_request.body,
            accept=accept,
            uncompressed=True,  # a stream is relayed as it comes, and parsed
            silence=silence,
        )
    except UpstreamError as problem:
        outcome = RunOutcome(overhead_ms=overhead_ms, received=received)
        outcome.fail(problem.code, problem.message)
        return Launch(run=run, outcome=outcome, error=problem)
    is_stream = response.headers.get("content-type", "").startswith("text/event-stream")
    if response.status_code == 200 and is_stream:
        reader = RunReader(run.pk, response, sinks)
        reader.outcome.overhead_ms = overhead_ms
        reader.outcome.received = received
        reader.sent = sent
        reader.start()
        return Launch(run=run, reader=reader, response=response)
    problem = None
    try:
        body = await response.aread()
    except httpx.HTTPError as error:
        problem = upstream.translate(error, silence)
        outcome = RunOutcome(http_status=response.status_code)
        outcome.fail(problem.code, problem.message)
        body = b""
    else:
        if response.status_code >= 400:
            outcome = error_outcome(response, body)
        else:
            outcome = json_outcome(response, body)
    finally:
        await response.aclose()
    # The time the upstream took, to its last byte or to its failure, on either branch.
    outcome.upstream_ms = (time.perf_counter() - sent) * 1000
    outcome.overhead_ms = overhead_ms
    outcome.received = received
    return Launch(run=run, outcome=outcome, body=body, response=response, error=problem)


# Finishing tasks still running, held so they are not garbage-collected mid-write.
_FINISHING: set[asyncio.Task] = set()


def _finish_later(run_id: int, outcome: RunOutcome) -> None:
    """Complete the run's record now that the caller's response has left.

    The Run row was committed before the request went upstream, so the run is in the history
    whatever happens; its completion (usage, thread, rollup) need not delay the caller. A
    crash in between leaves it `running` for the reaper.
    """
    task = asyncio.ensure_future(sync_thread.call(finish_run, run_id, outcome))
    _FINISHING.add(task)
    task.add_done_callback(_FINISHING.discard)
    task.add_done_callback(lambda _task: IN_FLIGHT.discard(run_id))


async def settle() -> None:
    """Wait until every run this process is reading or finishing has its final record."""
    while _FINISHING or READERS:
        await asyncio.gather(*_FINISHING, *(reader.finished.wait() for reader in READERS.values()))
