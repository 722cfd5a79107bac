"""Following runs whose end RunTools had not told yet, until it does.

A run that answered `registered` or `dispatched`, or was cut off before its final frame
(`upstream_disconnected`), is marked by the finish step (`follow_next_at`). Each worker's
maintenance thread (and `manage.py follow_runs`) looks such runs up with `GET /v1/run/{id}`,
with a doubling delay, and:

- when RunTools says the run ended, finishes it again through `finish_run`, which first takes
  back what the run's first finish counted (rollup, statistics, thread), so the daily rollups,
  the reports' statistics and the budgets count the run exactly once, with its final usage;
- when the run cannot be followed (RunTools does not know it, or it is too old, or too many
  lookups went unanswered), marks it `unfollowable`: its status stays what RunTools last said
  and its cost keeps its status (partial or unpriced), never a priced $0.

A run is claimed with an atomic `UPDATE ... WHERE follow_lease_until < now`: of several workers,
exactly one gets it until the lease ends.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from runs.core import sql as fastsql
from runs.core import upstream
from runs.core.crypto import KeyDecryptionError, SealedKey
from runs.core.days import run_day
from runs.models import DailyRunStats, DailyUsage, Run, RunStatus, Thread, usage_dimensions
from runs.pipeline.recording import RunOutcome, finish_run
from runs.pipeline.stats import ALL_DIMENSIONS, _add_to_row, _Group, _max_turns

logger = logging.getLogger(__name__)

UNFOLLOWABLE = "unfollowable"
ENDED_UPSTREAM = {
    "completed": RunStatus.COMPLETED,
    "failed": RunStatus.FAILED,
    "error": RunStatus.FAILED,
    "cancelled": RunStatus.CANCELLED,
    "canceled": RunStatus.CANCELLED,
}


@dataclass
class FollowRound:
    """What one round did, by run id."""

    finished: list[int] = field(default_factory=list)
    unfollowable: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # claimed by another worker first


def due_runs(now: datetime, limit: int) -> list[int]:
    """The ids of runs due a lookup, the longest-waiting first (served by run_follow_due)."""
    due = Run.objects.filter(follow_next_at__lte=now).order_by("follow_next_at")
    return list(due.values_list("pk", flat=True)[:limit])


def claim(run_id: int, now: datetime) -> bool:
    """Lease the run to this worker for RTDASH_FOLLOW_LEASE_SECONDS; False if another holds
    it or it is no longer due. One UPDATE: on PostgreSQL a concurrent claim waits for the row
    and then finds the lease taken."""
    lease = now + timedelta(seconds=settings.RTDASH_FOLLOW_LEASE_SECONDS)
    claimed = (
        Run.objects.filter(pk=run_id, follow_next_at__lte=now)
        .filter(Q(follow_lease_until__isnull=True) | Q(follow_lease_until__lt=now))
        .update(follow_lease_until=lease, follow_attempts=F("follow_attempts") + 1)
    )
    return claimed == 1


def follow_due_runs(
    now: datetime | None = None, limit: int | None = None, seconds: float | None = None
) -> FollowRound:
    """One round: look up every due run this worker can claim (at most RTDASH_FOLLOW_BATCH).

    With `seconds`, no new run is claimed once that long has passed: the maintenance thread
    also stamps heartbeats, and a round of slow lookups must not let its live runs go stale.
    """
    now = now or timezone.now()
    deadline = time.monotonic() + seconds if seconds is not None else None
    result = FollowRound()
    for run_id in due_runs(now, limit or settings.RTDASH_FOLLOW_BATCH):
        if deadline is not None and time.monotonic() >= deadline:
            break
        if not claim(run_id, now):
            result.skipped.append(run_id)
            continue
        outcome = follow_run(run_id, now)
        getattr(result, outcome).append(run_id)
    if result.finished or result.unfollowable:
        logger.info(
            "Followed runs: %d finished, %d unfollowable, %d still waiting",
            len(result.finished),
            len(result.unfollowable),
            len(result.waiting),
        )
    return result


def follow_run(run_id: int, now: datetime) -> str:
    """Look one claimed run up; "finished", "unfollowable" or "waiting"."""
    run = Run.objects.select_related("team").get(pk=run_id)
    age = (now - run.started_at).total_seconds()
    if age > settings.RTDASH_FOLLOW_MAX_AGE_SECONDS:
        return _give_up(run, "it is older than RTDASH_FOLLOW_MAX_AGE_SECONDS")
    key = run.team.default_key()
    if key is None:
        return _give_up(run, "the team has no RunTools key to look it up with")
    try:
        response = async_to_sync(upstream.look_up_run)(
            SealedKey(key.ciphertext), run.upstream_run_id
        )
    except (upstream.UpstreamError, KeyDecryptionError) as problem:
        return _wait(run, now, str(problem))
    if response.status_code == 404:
        return _give_up(run, "RunTools does not know this run (404)")
    if response.status_code != 200:
        return _wait(run, now, f"RunTools answered {response.status_code}")
    data = _lookup_data(response.content)
    status = str(data.get("status") or "").lower()
    if status not in ENDED_UPSTREAM:
        return _wait(run, now, f"RunTools says the run is {status or 'in an unknown state'}")
    finish_run(run.pk, _final_outcome(run, data, ENDED_UPSTREAM[status]), take_back=_take_back)
    return "finished"


def _lookup_data(body: bytes) -> dict:
    try:
        envelope = json.loads(body)
    except ValueError:
        return {}
    data = envelope.get("data", envelope) if isinstance(envelope, dict) else None
    return data if isinstance(data, dict) else {}


def _final_outcome(run: Run, data: dict, status: str) -> RunOutcome:
    """The run as first recorded, with RunTools' final status, result and usage."""
    outcome = RunOutcome(
        status=status,
        upstream_run_id=run.upstream_run_id,
        upstream_thread_id=run.upstream_thread_id,
        sandbox_id=run.sandbox_id,
        execution_mode=run.execution_mode,
        http_status=run.http_status,
        iterations=run.iterations,
        first_byte_at=run.first_byte_at,
        upstream_ms=run.upstream_ms,
        overhead_ms=run.overhead_ms,
        frame_count=run.frame_count,
        result=run.result or None,
        usage=run.usage,
    )
    usage = data.get("tokensUsed") if isinstance(data.get("tokensUsed"), dict) else None
    if usage is None and isinstance(data.get("usage"), dict):
        usage = data["usage"]
    if usage is not None:
        outcome.usage = usage
    if isinstance(data.get("output"), str):
        outcome.result = data["output"]
    if run.error_code == "upstream_disconnected":
        # What the client saw stays on the record: the stream was cut. Only the usage and the
        # answer RunTools recorded are added.
        outcome.status = run.status
        outcome.error_code = run.error_code
        outcome.error_message = (
            f"{run.error_message} Usage and result from RunTools' run lookup "
            f"(the run ended {status} upstream)."
        ).strip()
    return outcome


def _take_back(locked: Run) -> bool:
    """Remove what the run's first finish added to the rollup, the statistics and its thread
    (in finish_run's transaction, the run locked). False when the run is no longer followed:
    another finish got there first."""
    run = Run.objects.get(pk=locked.pk)
    if run.follow_next_at is None:
        return False
    day = run_day(locked)  # the day its first finish counted it on (the team's zone)
    dimensions = usage_dimensions(run.agent, run.user_id, run.token_id, run.source)
    rollup = DailyUsage.objects.filter(team_id=run.team_id, day=day, dimensions=dimensions)
    for pk in rollup.values_list("pk", flat=True):
        fastsql.add_to_row(DailyUsage, pk, added=_negated_usage(run), replaced={})
    if DailyRunStats.objects.filter(team_id=run.team_id, day=day).exists():
        for key in (dimensions, ALL_DIMENSIONS):
            _add_to_row({"team_id": run.team_id, "day": day, "dimensions": key}, _negated(run))
    if run.thread_id is not None:
        fastsql.add_to_row(
            Thread,
            run.thread_id,
            added={
                "turns": -1,
                "input_tokens": -(run.input_tokens or 0),
                "output_tokens": -(run.output_tokens or 0),
            },
            replaced={},
        )
    Run.objects.filter(pk=run.pk).update(follow_next_at=None, follow_lease_until=None)
    return True


def _negated_usage(run: Run) -> dict[str, int]:
    """The negative of what runs.pipeline.recording.record_usage added for this run."""
    return {
        "runs": -1,
        "completed": -int(run.status == RunStatus.COMPLETED),
        "failed": -int(run.status in (RunStatus.FAILED, RunStatus.INTERRUPTED)),
        "input_tokens": -(run.input_tokens or 0),
        "output_tokens": -(run.output_tokens or 0),
        "cached_input_tokens": -(run.cached_input_tokens or 0),
        "reasoning_tokens": -(run.reasoning_tokens or 0),
        "cost": -(run.cost or 0),
        "unpriced_runs": -int(run.cost is None),
        "duration_ms": -(run.duration_ms or 0),
    }


def _negated(run: Run) -> _Group:
    """The negative of what runs.pipeline.stats.record_run_stats added for this run."""
    group = _Group()
    group.add(
        run.cost_status,
        run.iterations,
        _max_turns(run.config),
        run.duration_ms,
        run.first_byte_ms,
    )
    for name in ("runs", "partial", "iterations", "iterations_sum", "turns", "hit"):
        setattr(group, name, -getattr(group, name))
    for histogram in (group.durations, group.first_bytes):
        histogram.counts = [-count for count in histogram.counts]
    return group


def _wait(run: Run, now: datetime, why: str) -> str:
    """Not ended yet (or RunTools could not say): look again later, or give up."""
    if run.follow_attempts >= settings.RTDASH_FOLLOW_MAX_ATTEMPTS:
        return _give_up(run, f"{run.follow_attempts} lookups did not find its end ({why})")
    delay = min(
        settings.RTDASH_FOLLOW_FIRST_DELAY * 2 ** max(run.follow_attempts - 1, 0),
        settings.RTDASH_FOLLOW_MAX_DELAY,
    )
    Run.objects.filter(pk=run.pk).update(
        follow_next_at=now + timedelta(seconds=delay), follow_lease_until=None
    )
    return "waiting"


def _give_up(run: Run, why: str) -> str:
    """Mark the run unfollowable. Its usage and cost stay as first recorded (partial or
    unpriced, never a priced $0), so nothing in the rollups changes."""
    note = (
        f"rtdash could not learn how this run ended: {why}. Its usage is what was known when "
        "it was first recorded."
    )
    # A cut-off run keeps the code its client saw; the note says the lookup failed too.
    cut_off = run.error_code == "upstream_disconnected"
    with transaction.atomic():
        updated = Run.objects.filter(pk=run.pk, follow_next_at__isnull=False).update(
            follow_next_at=None,
            follow_lease_until=None,
            error_code=run.error_code if cut_off else UNFOLLOWABLE,
            error_message=f"{run.error_message} {note}".strip() if cut_off else note,
        )
    if updated:
        logger.warning("Run %s is unfollowable: %s", run.pk, why)
    return "unfollowable"
