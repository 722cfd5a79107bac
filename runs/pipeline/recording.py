"""The database side of a run's one path: create the Run, store its frames, finish it.

Everything that ends a run — success, upstream error, cut stream, Stop, the reaper — goes
through `finish_run`, so status, usage, cost, the thread and the daily rollup always move
together in one transaction.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, DecimalField, Q, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from runs.core import sql as fastsql
from runs.core.days import day_start, run_day, zone_named
from runs.core.validation import RunRequest
from runs.models import (
    FINISHED_STATUSES,
    DailyUsage,
    GatewayToken,
    Run,
    RunStatus,
    Team,
    Thread,
    usage_dimensions,
)
from runs.operations.metrics import observe_finished_run
from runs.pipeline.meta_usage import rebuild_meta_usage, record_meta_usage, uncount_meta_usage
from runs.pipeline.pricing import price_run
from runs.pipeline.stats import record_run_stats

# Identifies the process reading a run, so the reaper can tell a dead reader from a live one.
READER_ID = f"{socket.gethostname()}:{os.getpid()}"

# RunTools' usage names, with the older OpenAI-style names accepted as fallbacks, each also
# in snake_case (as other runtimes and SDKs spell them): liberal in what the upstream sends.
USAGE_FIELDS = {
    "input_tokens": ("inputTokens", "promptTokens", "input_tokens", "prompt_tokens"),
    "output_tokens": ("outputTokens", "completionTokens", "output_tokens", "completion_tokens"),
    "cached_input_tokens": ("cachedInputTokens", "cached_input_tokens"),
    "reasoning_tokens": ("reasoningTokens", "reasoning_tokens"),
    "total_tokens": ("totalTokens", "total_tokens"),
}
# The largest token count believed for one run. Beyond it (or Infinity, which Python's JSON
# parser accepts) a number is not a count, and the rollups that add runs' counts in 64-bit
# columns must never overflow.
MAX_TOKENS_COUNTED = 10**15
UPSTREAM_STATUSES = {
    "completed": RunStatus.COMPLETED,
    "registered": RunStatus.REGISTERED,
    "dispatched": RunStatus.DISPATCHED,
    "failed": RunStatus.FAILED,
    "error": RunStatus.FAILED,
    "cancelled": RunStatus.CANCELLED,
    "canceled": RunStatus.CANCELLED,
    # Not over yet, in the words of RunTools' run list (`running`) and other runtimes': as
    # `dispatched`, the run is followed until RunTools says how it ended.
    "running": RunStatus.DISPATCHED,
    "queued": RunStatus.DISPATCHED,
    "pending": RunStatus.DISPATCHED,
    "in_progress": RunStatus.DISPATCHED,
    "started": RunStatus.DISPATCHED,
}
THREAD_TITLE_LENGTH = 80
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class RunOutcome:
    """What rtdash learned about a run from the upstream, filled in as it arrives."""

    status: str = ""
    result: str | None = None
    usage: dict | None = None
    iterations: int | None = None
    upstream_run_id: str = ""
    upstream_thread_id: str = ""
    sandbox_id: str = ""
    execution_mode: str = ""
    http_status: int | None = None
    error_code: str = ""
    error_message: str = ""
    first_byte_at: datetime | None = None
    upstream_ms: float | None = None
    overhead_ms: float | None = None
    # The run's receipt on the monotonic clock (time.perf_counter) of the process that took
    # it: its duration is measured from here, like its overhead. None for a run finished
    # elsewhere (the reaper), whose duration comes from its wall-clock start.
    received: float | None = None
    frame_count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def take_ids(self, data: dict) -> None:
        """Pick the run's identifiers out of any upstream object that carries them."""
        for attribute, key in (
            ("upstream_run_id", "runId"),
            ("upstream_thread_id", "threadId"),
            ("sandbox_id", "sandboxId"),
            ("execution_mode", "executionMode"),
        ):
            value = data.get(key)
            if isinstance(value, str) and value:
                setattr(self, attribute, value[:200])

    def take_result(self, data: dict) -> None:
        """Read a run result object (the JSON response's data, or a run_completed frame)."""
        self.take_ids(data)
        status = data.get("status")
        if isinstance(status, str) and status:
            self.status = UPSTREAM_STATUSES.get(status.lower(), RunStatus.COMPLETED)
        if isinstance(data.get("result"), str):
            self.result = data["result"]
        if isinstance(data.get("usage"), dict):
            self.usage = data["usage"]
        iterations = data.get("iterations")
        if isinstance(iterations, int) and not isinstance(iterations, bool) and iterations >= 0:
            self.iterations = iterations

    def fail(self, code: str, message: str, status: str = RunStatus.FAILED) -> None:
        self.status = status
        self.error_code = code[:100]
        self.error_message = message


def error_outcome(response, body: bytes) -> RunOutcome:
    """The outcome of an upstream HTTP error: its status and the envelope's code and message."""
    outcome = RunOutcome(http_status=response.status_code)
    code, message = f"http_{response.status_code}", f"RunTools answered {response.status_code}."
    try:
        envelope = json.loads(body)
        error = envelope.get("error") if isinstance(envelope, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or code)
            message = str(error.get("message") or message)
    except ValueError:
        pass
    outcome.fail(code, message)
    return outcome


def json_outcome(response, body: bytes) -> RunOutcome:
    """The outcome of a successful non-streaming run."""
    outcome = RunOutcome(http_status=response.status_code)
    try:
        envelope = json.loads(body)
    except ValueError:
        outcome.fail(
            "invalid_upstream_response", "RunTools answered 200 with a body that is not JSON."
        )
        return outcome
    # Be liberal: some endpoints return raw payloads without the data envelope.
    data = envelope.get("data", envelope) if isinstance(envelope, dict) else None
    if isinstance(data, dict):
        outcome.take_result(data)
    if not outcome.status:
        outcome.status = RunStatus.COMPLETED
    return outcome


def _usage_value(usage: dict, names: tuple[str, ...]) -> int | None:
    """The first of `names` that holds a count: a non-negative number, or its digits as a
    string (`"1480"`)."""
    for name in names:
        value = usage.get(name)
        # At most 16 digits (MAX_TOKENS_COUNTED's): int() refuses past 4,300 of them.
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
            value = int(value)
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and 0 <= value <= MAX_TOKENS_COUNTED
        ):
            return int(value)
    return None


def storable(value: Any) -> Any:
    """The value as the database can keep it: NUL characters (PostgreSQL refuses them in text
    and jsonb) and lone surrogates (which UTF-8 cannot encode; JSON's `\\ud800` from the
    upstream decodes to one) replaced with U+FFFD, and numbers that are not finite (Python's
    JSON parser reads `Infinity` and `NaN`, which no JSON column accepts) made null.

    The upstream gets the caller's bytes unchanged; only rtdash's copy is mended.
    """
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                value = _LONE_SURROGATE.sub("\ufffd", value)
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [storable(item) for item in value]
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    return value


def start_run(
    team: Team,
    request: RunRequest,
    *,
    source: str,
    token: GatewayToken | None = None,
    token_id: int | None = None,
    user=None,
    legacy_path: bool = False,
    started_at: datetime | None = None,
) -> Run:
    """Record a new run, `running`, started at its receipt (`started_at`, default now).

    The token is given as a model or, from the gateway's token query, by id."""
    now = timezone.now()
    run = fastsql.new(
        Run,
        {
            "team_id": team.pk,
            "source": source,
            "token_id": token.pk if token is not None else token_id,
            "user_id": user.pk if user is not None else None,
            "agent": storable(request.agent),
            "prompt": storable(request.prompt),
            "messages": storable(request.messages),
            "config": storable(request.config),
            "metadata": storable(request.metadata),
            "stream": request.stream,
            "legacy_path": legacy_path,
            "upstream_thread_id": storable(request.thread_id),
            "started_at": started_at or now,
            "reader": READER_ID,
            "heartbeat_at": now,
        },
    )
    # Prepared SQL: on the gateway's path, Run.objects.create spent longer compiling its
    # INSERT than the database spent running it (runs.core.sql).
    return fastsql.insert(run)


FrameRows = list[tuple[int, str, str, datetime]]  # (sequence, event, data, received at)


def save_frames(batches: list[tuple[int, FrameRows]]) -> None:
    """Store batches of frames of any number of runs in one transaction; each batch also
    counts as its run's heartbeat.

    One executemany instead of bulk_create: building model instances cost ~37 µs a frame
    (375 ms for a 10,000-delta stream, measured in-process), the raw insert ~5 µs. One
    transaction for every run's frames instead of one per run: with 50 playground streams a
    worker made 200 commits a second, and its one database thread held up the relay.
    """
    adapt = _once_per_value(connection.ops.adapt_datetimefield_value)
    rows = [
        (run_id, seq, storable(event[:100]), storable(data), adapt(at))
        for run_id, events in batches
        for seq, event, data, at in events
    ]
    run_ids = sorted({run_id for run_id, _ in batches})
    fastsql.insert_frames(rows, run_ids, adapt(timezone.now()))


def _once_per_value(convert: Callable[[datetime], Any]) -> Callable[[datetime], Any]:
    """`convert`, called once per distinct value.

    The frames of one upstream chunk share its arrival time, so a 10,000-delta stream has
    ~60 distinct times. Converting each frame's anyway (timezone checks, then a string on
    SQLite) was a fifth of a gateway worker's CPU on such a stream, profiled with py-spy.
    """
    converted: dict[datetime, Any] = {}

    def convert_once(value: datetime) -> Any:
        try:
            return converted[value]
        except KeyError:
            converted[value] = result = convert(value)
            return result

    return convert_once


def _apply(run: Run, outcome: RunOutcome, now: datetime) -> None:
    # Every field in FINISH_WRITES is assigned here, even to its start value: a deferred field
    # left unassigned would cost a query of its own when the run is saved (a test holds it).
    run.status = outcome.status or RunStatus.COMPLETED
    run.result = storable(outcome.result or "")
    usage = outcome.usage or {}
    run.usage = storable(outcome.usage)
    for column, names in USAGE_FIELDS.items():
        setattr(run, column, _usage_value(usage, names))
    run.iterations = outcome.iterations
    run.upstream_run_id = storable(outcome.upstream_run_id) or run.upstream_run_id
    run.upstream_thread_id = storable(outcome.upstream_thread_id) or run.upstream_thread_id
    run.sandbox_id = storable(outcome.sandbox_id)
    run.execution_mode = storable(outcome.execution_mode)
    run.http_status = outcome.http_status
    run.error_code = storable(outcome.error_code)
    run.error_message = storable(outcome.error_message)
    run.frame_count = outcome.frame_count
    run.finished_at = now
    # Measured on the clock the overhead was measured on, from the same receipt, and rounded
    # up while the parts are rounded down: overhead + upstream time never exceed the duration.
    if outcome.received is not None:
        elapsed_ms = (time.perf_counter() - outcome.received) * 1000
    else:
        elapsed_ms = (now - run.started_at).total_seconds() * 1000
    run.duration_ms = max(0, math.ceil(elapsed_ms))
    run.first_byte_at = outcome.first_byte_at
    run.first_byte_ms = None
    if outcome.first_byte_at is not None:
        run.first_byte_ms = max(
            0, round((outcome.first_byte_at - run.started_at).total_seconds() * 1000)
        )
    upstream_ms = outcome.upstream_ms
    run.upstream_ms = math.floor(upstream_ms) if upstream_ms is not None else None
    run.overhead_ms = outcome.overhead_ms
    run.reader = ""
    run.thread_id = None


def _link_thread(run: Run, now: datetime) -> None:
    """Count the run as a turn of its thread, creating the thread's row on its first turn.

    Only a run RunTools took (a 2xx answer) is a turn: one refused (a 404 for a mistyped
    thread id, a 429 retried) or never delivered is in the history, but is no turn of a
    conversation and makes no thread. It is still shown in the thread it was sent to, when
    that thread is one the team has."""
    if not run.upstream_thread_id:
        return
    if not _taken_upstream(run):
        run.thread_id = (
            Thread.objects.filter(team_id=run.team_id, upstream_id=run.upstream_thread_id)
            .values_list("pk", flat=True)
            .first()
        )
        return
    title = (run.prompt or _first_user_message(run.messages)).strip().splitlines()
    # The first run of a thread creates its row; later ones add a turn and their tokens.
    thread = Thread(
        team_id=run.team_id,
        upstream_id=run.upstream_thread_id,
        agent=run.agent,
        title=(title[0] if title else "")[:THREAD_TITLE_LENGTH],
        created_at=run.started_at,
        turns=1,
        input_tokens=run.input_tokens or 0,
        output_tokens=run.output_tokens or 0,
        last_activity_at=now,
    )
    run.thread_id = fastsql.upsert_adding(
        thread,
        key=("team", "upstream_id"),
        added=("turns", "input_tokens", "output_tokens"),
        replaced=("last_activity_at",),
    )


def _taken_upstream(run: Run) -> bool:
    return run.http_status is not None and 200 <= run.http_status < 300


def _first_user_message(messages: list | None) -> str:
    for message in messages or []:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
    return ""


ROLLUP_COUNTERS = (
    "runs", "completed", "failed", "input_tokens", "output_tokens", "cached_input_tokens",
    "reasoning_tokens", "cost", "unpriced_runs", "duration_ms",
)  # fmt: skip


def record_usage(run: Run) -> None:
    """Add a finished run to its day's rollup row (created on first use), in one statement."""
    row = DailyUsage(
        team_id=run.team_id,
        day=run_day(run),  # in the team's time zone
        dimensions=usage_dimensions(run.agent, run.user_id, run.token_id, run.source),
        agent=run.agent,
        user_id=run.user_id,
        token_id=run.token_id,
        source=run.source,
        runs=1,
        completed=int(run.status == RunStatus.COMPLETED),
        failed=int(run.status in (RunStatus.FAILED, RunStatus.INTERRUPTED)),
        input_tokens=run.input_tokens or 0,
        output_tokens=run.output_tokens or 0,
        cached_input_tokens=run.cached_input_tokens or 0,
        reasoning_tokens=run.reasoning_tokens or 0,
        cost=run.cost or 0,
        unpriced_runs=int(run.cost is None),
        duration_ms=run.duration_ms or 0,
    )
    fastsql.upsert_adding(row, key=("team", "day", "dimensions"), added=ROLLUP_COUNTERS)


# What finishing a run reads and writes; everything else on the row was set at its start.
FINISH_READS = (
    "team_id",
    "user_id",
    "token_id",
    "source",
    "agent",
    "prompt",
    "messages",
    "config",
    "metadata",  # for the metadata rollup (runs.pipeline.meta_usage)
    "status",
    "started_at",
    "upstream_run_id",
    "upstream_thread_id",
)
FINISH_WRITES = [
    "status", "result", "usage", *USAGE_FIELDS, "iterations", "upstream_run_id",
    "upstream_thread_id", "sandbox_id", "execution_mode", "http_status", "error_code",
    "error_message", "frame_count", "finished_at", "duration_ms", "first_byte_at",
    "first_byte_ms", "upstream_ms", "overhead_ms", "reader", "thread", "cost", "cost_status",
]  # fmt: skip


def finish_run(
    run_id: int, outcome: RunOutcome, *, take_back: Callable[[Run], bool] | None = None
) -> Run:
    """End a run exactly once: status, usage, timings, thread, cost and rollup together.

    Every statement here is prepared once (runs.core.sql): every run pays for this, and with
    the ORM it cost more CPU than the rest of a gateway request.

    `take_back` is for a run followed after it ended (runs.pipeline.follow): called with the
    locked run, it removes what the run's first finish counted and returns True, so the run
    is finished again and still counted once; or returns False to leave the run as it is.
    """
    now = timezone.now()
    with transaction.atomic():
        # Locked, with only the columns finishing reads (the others stay deferred).
        run = fastsql.run_for_update(run_id, FINISH_READS)
        if run.status in FINISHED_STATUSES:
            if take_back is None or not take_back(run):
                return run  # already ended (for instance by the reaper); never count it twice
            # The run as its first finish counted it, taken back from the metadata rollup too.
            uncount_meta_usage(Run.objects.get(pk=run_id))
        _apply(run, outcome, now)
        _link_thread(run, now)
        run.cost, run.cost_status = price_run(run)
        # Only what finishing changes: saving all ~50 columns costs a third of the finish.
        fastsql.update(run, FINISH_WRITES)
        record_usage(run)
        record_meta_usage(run)  # spend by metadata key (runs.pipeline.meta_usage)
        # Duration and iteration histograms for the reports' percentiles (runs.pipeline.stats).
        record_run_stats(run)
        if take_back is None:
            _follow_later_if_unfinished(run, now)
    observe_finished_run(run)  # this process's latency histograms (runs.operations.metrics)
    return run


def _follow_later_if_unfinished(run: Run, now: datetime) -> None:
    """Mark a run whose end RunTools has not told yet for runs.pipeline.follow: one that
    answered registered or dispatched, or was cut off before its usage arrived."""
    if not run.upstream_run_id:
        return
    pending = run.status in (RunStatus.REGISTERED, RunStatus.DISPATCHED)
    cut_off = run.error_code == "upstream_disconnected" and run.output_tokens is None
    if pending or cut_off:
        run.follow_next_at = now + timedelta(seconds=settings.RTDASH_FOLLOW_FIRST_DELAY)
        fastsql.update(run, ["follow_next_at"])


def rebuild_usage(team: Team | None = None, since: date | None = None) -> int:
    """Rebuild the daily rollup from the runs, each team's days in its own time zone, with one
    grouped query per zone; returns runs counted. `since` is a day in each team's zone.

    Uses the same grouping and counting rules as `record_usage`, so the two always agree.
    """
    teams = Team.objects.all() if team is None else Team.objects.filter(pk=team.pk)
    by_zone: dict[str, list[int]] = {}
    for team_id, name in teams.values_list("pk", "timezone"):
        by_zone.setdefault(name, []).append(team_id)
    rows = []
    for name, team_ids in by_zone.items():
        zone = zone_named(name)
        runs = Run.objects.filter(status__in=FINISHED_STATUSES, team_id__in=team_ids)
        if since is not None:
            runs = runs.filter(started_at__gte=day_start(since, zone))
        rows += _rollup_rows(runs, zone)
    rollup = DailyUsage.objects.all()
    if team is not None:
        rollup = rollup.filter(team=team)
    if since is not None:
        rollup = rollup.filter(day__gte=since)
    with transaction.atomic():
        rollup.delete()
        DailyUsage.objects.bulk_create(rows, batch_size=2000)
    # The metadata rollup sums the same runs (and their costs, which recompute_costs changes).
    rebuild_meta_usage(team, since)
    return sum(row.runs for row in rows)


def _rollup_rows(runs, zone: tzinfo) -> list[DailyUsage]:
    """DailyUsage rows of these runs, grouped by their day in `zone` (in the database)."""
    failed = [RunStatus.FAILED, RunStatus.INTERRUPTED]
    groups = (
        runs.annotate(day=TruncDate("started_at", tzinfo=zone))
        .values("team_id", "day", "agent", "user_id", "token_id", "source")
        .annotate(
            n_runs=Count("pk"),
            n_completed=Count("pk", filter=Q(status=RunStatus.COMPLETED)),
            n_failed=Count("pk", filter=Q(status__in=failed)),
            sum_input=Coalesce(Sum("input_tokens"), 0),
            sum_output=Coalesce(Sum("output_tokens"), 0),
            sum_cached=Coalesce(Sum("cached_input_tokens"), 0),
            sum_reasoning=Coalesce(Sum("reasoning_tokens"), 0),
            sum_cost=Coalesce(Sum("cost"), Decimal(0), output_field=DecimalField()),
            n_unpriced=Count("pk", filter=Q(cost__isnull=True)),
            sum_duration=Coalesce(Sum("duration_ms"), 0),
        )
        .order_by()
    )
    return [
        DailyUsage(
            team_id=group["team_id"],
            day=group["day"],
            dimensions=usage_dimensions(
                group["agent"], group["user_id"], group["token_id"], group["source"]
            ),
            agent=group["agent"],
            user_id=group["user_id"],
            token_id=group["token_id"],
            source=group["source"],
            runs=group["n_runs"],
            completed=group["n_completed"],
            failed=group["n_failed"],
            input_tokens=group["sum_input"],
            output_tokens=group["sum_output"],
            cached_input_tokens=group["sum_cached"],
            reasoning_tokens=group["sum_reasoning"],
            cost=group["sum_cost"],
            unpriced_runs=group["n_unpriced"],
            duration_ms=group["sum_duration"],
        )
        for group in groups.iterator(chunk_size=5000)
    ]
