"""Making finished runs for the report, pricing and budget tests.

Runs go through the real recording path (start_run → finish_run, which prices them and adds
them to the rollups); only the upstream's answer is written by the test, as a RunOutcome, so a
test can say exactly which usage fields RunTools sent.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from unittest import mock

from django.utils import timezone

from runs.core.validation import validate_run
from runs.models import Price, Run
from runs.pipeline.recording import RunOutcome, finish_run, start_run


def finished_run(
    team,
    *,
    agent: str = "code-assistant",
    usage: dict | None = None,
    status: str = "completed",
    started_at: datetime | None = None,
    http_status: int | None = 200,
    iterations: int | None = None,
    config: dict | None = None,
    user=None,
    token=None,
    source: str = "gateway",
    first_byte_ms: int | None = None,
    thread_id: str = "",
    duration_ms: int = 1500,
) -> Run:
    """A run finished through finish_run. With `started_at`, the run is backdated and finishes
    `duration_ms` after it (the clock finish_run reads is set to that moment), so durations
    stay as real runs have them."""
    body = {"agent": agent, "prompt": "Price me", "config": config or {}}
    if thread_id:
        body["threadId"] = thread_id
    request = validate_run(body, json.dumps(body).encode())
    run = start_run(team, request, source=source, user=user, token=token)
    if started_at is not None:
        Run.objects.filter(pk=run.pk).update(started_at=started_at)
    outcome = RunOutcome(status=status, usage=usage, iterations=iterations, http_status=http_status)
    if thread_id:
        outcome.upstream_thread_id = thread_id
    if first_byte_ms is not None:
        start = started_at or run.started_at
        outcome.first_byte_at = start + timedelta(milliseconds=first_byte_ms)
    if started_at is None:
        return finish_run(run.pk, outcome)
    finished_at = started_at + timedelta(milliseconds=duration_ms)
    with mock.patch("runs.pipeline.recording.timezone.now", return_value=finished_at):
        return finish_run(run.pk, outcome)


def set_price(team, agent: str = "", since=None, **rates) -> Price:
    values = {
        "input_per_million": Decimal("3"),
        "output_per_million": Decimal("15"),
        **{
            name: Decimal(str(value)) if value is not None else None
            for name, value in rates.items()
        },
    }
    return Price.objects.create(
        team=team, agent=agent, effective_from=since or timezone.now().date(), **values
    )
