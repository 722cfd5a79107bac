"""Starting a run for a person or a script: the shared front half of a run's one path.

The playground and the demo seed use `launch`; the gateway does the same steps inline (in one
database round trip, for latency) because it also hands the raw upstream response back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from asgiref.sync import sync_to_async

from runs.core import upstream
from runs.core.crypto import SealedKey
from runs.core.validation import RunRequest
from runs.models import Run, Team
from runs.pipeline.budgets import enforce_budget
from runs.pipeline.reader import IN_FLIGHT, READERS, RunReader, Sink
from runs.pipeline.recording import RunOutcome, error_outcome, finish_run, json_outcome, start_run


class NoRunToolsKey(Exception):
    """The team has no usable RunTools key."""


@dataclass
class Launch:
    """A started run: streaming (`reader` is reading it) or already finished (`outcome`)."""

    run: Run
    reader: RunReader | None = None
    outcome: RunOutcome | None = None
    body: bytes = b""
    response: httpx.Response | None = None


def _prepare(
    team: Team, run_request: RunRequest, source: str, user, token
) -> tuple[Run, SealedKey]:
    enforce_budget(team, run_request.agent)  # raises BudgetExceeded
    key = team.default_key()
    if key is None:
        raise NoRunToolsKey("The team has no RunTools key; an owner can add one in Settings.")
    # Sealed until runs.core.upstream puts it on the request; checked now (KeyDecryptionError) so
    # an unreadable key refuses the run before it is recorded.
    runtools_key = SealedKey(key.ciphertext)
    runtools_key.check()
    run = start_run(team, run_request, source=source, user=user, token=token)
    return run, runtools_key


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
    received = time.perf_counter()
    run, runtools_key = await sync_to_async(_prepare)(team, run_request, source, user, token)
    IN_FLIGHT.add(run.pk)
    try:
        return await _send(run, runtools_key, run_request, sinks, received)
    finally:
        if run.pk in IN_FLIGHT and run.pk not in READERS:
            IN_FLIGHT.discard(run.pk)  # finished here; a reader removes its own run


async def _send(
    run: Run, runtools_key: SealedKey, run_request: RunRequest, sinks, received: float
) -> Launch:
    sent = time.perf_counter()
    # rtdash's own share of the run's time, as on the gateway: receipt to the send upstream.
    overhead_ms = (sent - received) * 1000
    accept = "text/event-stream" if run_request.stream else "application/json"
    try:
        response = await upstream.open_stream(
            runtools_key, "POST", "/run", content=run_request.body, accept=accept
        )
    except upstream.UpstreamError as problem:
        outcome = RunOutcome(overhead_ms=overhead_ms)
        outcome.fail(problem.code, problem.message)
        run = await sync_to_async(finish_run)(run.pk, outcome)
        return Launch(run=run, outcome=outcome)
    is_stream = response.headers.get("content-type", "").startswith("text/event-stream")
    if response.status_code == 200 and is_stream:
        reader = RunReader(run.pk, response, sinks or [])
        reader.outcome.overhead_ms = overhead_ms
        reader.start()
        return Launch(run=run, reader=reader, response=response)
    try:
        body = await response.aread()
    except httpx.HTTPError as error:
        problem = upstream.translate(error)
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
    outcome.upstream_ms = (time.perf_counter() - sent) * 1000
    outcome.overhead_ms = overhead_ms
    run = await sync_to_async(finish_run)(run.pk, outcome)
    return Launch(run=run, outcome=outcome, body=body, response=response)
