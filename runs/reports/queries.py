"""Usage and cost reports: read-only aggregation functions returning dataclasses.

Every report by agent, user, token or day reads the daily rollups — DailyUsage for sums and
DailyRunStats for percentiles, iterations and maxTurns — never the runs, so its cost grows with
the days in the period and the groups in them, not with the number of runs. Percentiles are
read from merged log-scale histograms (runs.pipeline.stats, which says how close they are).

The thread report is the exception: threads are not in the daily rollups. `top_threads` picks
the period's most expensive REPORT_THREADS threads from ThreadUsage (each thread's running
total), reading the runs only of threads that straddle the period's edges; the report then
reads the runs of the chosen threads by thread, so their percentiles are exact. The home
page's numbers are in runs.reports.overview.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import BooleanField, ExpressionWrapper, Q, Sum
from django.db.models.fields.json import KeyTextTransform

from runs.core.days import FIRST_DAY, LAST_DAY, day_start, in_calendar, local_today
from runs.core.exact_sums import read_sums, sums_of
from runs.models import (
    FINISHED_STATUSES,
    CostStatus,
    DailyRunStats,
    DailyUsage,
    GatewayToken,
    Run,
    RunStatus,
    Team,
    Thread,
    ThreadUsage,
)
from runs.pipeline.stats import (
    ALL_DIMENSIONS,
    Histogram,
    _max_turns,
    refresh_stale_days,
    sync_thread_usage,
)

PERIODS = {
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "month": "This month",
    "custom": "Custom",
}
GROUPS = {
    "agent": "Agent",
    "user": "User",
    "token": "Token",
    "day": "Day",
    "thread": "Thread",
}
MAX_PERIOD_DAYS = 366
REPORT_THREADS = 100
FAILED = (RunStatus.FAILED, RunStatus.INTERRUPTED)  # as runs.pipeline.recording counts them


class InvalidPeriod(ValueError):
    pass


@dataclass(frozen=True)
class Period:
    """Whole days of the team's time zone: rollup rows of [since, until], runs of [start, end)."""

    key: str
    since: date
    until: date  # inclusive
    zone: tzinfo = UTC

    @property
    def label(self) -> str:
        if self.key == "custom":
            return f"{self.since:%Y-%m-%d} to {self.until:%Y-%m-%d}"
        return PERIODS[self.key]

    @property
    def days(self) -> list[date]:
        return [self.since + timedelta(days=n) for n in range((self.until - self.since).days + 1)]

    @property
    def start(self) -> datetime:
        return day_start(self.since, self.zone)

    @property
    def previous(self) -> Period:
        """The period of the same length just before this one, to compare against."""
        length = (self.until - self.since).days + 1
        return Period("custom", self.since - timedelta(days=length), self.since - timedelta(days=1))

    @property
    def end(self) -> datetime:
        """The first moment after the period."""
        return day_start(self.until + timedelta(days=1), self.zone)


def _parse_day(value: str | None, name: str) -> date:
    try:
        day = date.fromisoformat((value or "").strip())
    except ValueError:
        raise InvalidPeriod(f"{name} must be a date like 2026-01-31.") from None
    if not in_calendar(day):
        raise InvalidPeriod(f"{name} must be a day from {FIRST_DAY} to {LAST_DAY}.")
    return day


def make_period(
    key: str = "30d",
    since: str | None = None,
    until: str | None = None,
    today: date | None = None,
    zone: tzinfo = UTC,
) -> Period:
    """A period from a report's query: one of PERIODS, or custom with since/until, in days of
    `zone` (the team's time zone; "today" is today there).

    Raises InvalidPeriod with a message for people.
    """
    today = today or local_today(zone)
    if key in ("", None) and (since or until):
        key = "custom"
    key = key or "30d"
    if key == "7d":
        return Period(key, today - timedelta(days=6), today, zone)
    if key == "30d":
        return Period(key, today - timedelta(days=29), today, zone)
    if key == "month":
        return Period(key, today.replace(day=1), today, zone)
    if key != "custom":
        raise InvalidPeriod(f"period must be one of {', '.join(PERIODS)}.")
    first = _parse_day(since, "since")
    last = _parse_day(until, "until") if until else today
    if last < first:
        raise InvalidPeriod("until is before since.")
    if (last - first).days >= MAX_PERIOD_DAYS:
        raise InvalidPeriod(f"A period is at most {MAX_PERIOD_DAYS} days.")
    return Period(key, first, last, zone)


@dataclass
class GroupRow:
    """One line of a report: a group's runs, tokens, cost and timings in the period."""

    key: str
    label: str
    runs: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal = field(default_factory=Decimal)
    unpriced_runs: int = 0
    partial_runs: int = 0
    duration_ms_sum: int = 0
    duration_p50_ms: float | None = None
    duration_p95_ms: float | None = None
    first_frame_p50_ms: float | None = None
    first_frame_p95_ms: float | None = None
    iterations_runs: int = 0
    iterations_sum: int = 0
    max_turns_runs: int = 0
    max_turns_hit: int = 0
    # For links to the runs behind a row: run-list filters.
    filters: dict[str, str] = field(default_factory=dict)
    _durations: Histogram = field(default_factory=Histogram, repr=False)
    _first_frames: Histogram = field(default_factory=Histogram, repr=False)
    # Stored histograms not yet added: merged all at once by finish() (Histogram.add_texts).
    _duration_texts: list[str] = field(default_factory=list, repr=False)
    _first_frame_texts: list[str] = field(default_factory=list, repr=False)
    # Raw values, for the few runs of a thread row (exact percentiles).
    _exact_durations: Counter = field(default_factory=Counter, repr=False)
    _exact_first_frames: Counter = field(default_factory=Counter, repr=False)

    @property
    def priced_runs(self) -> int:
        return self.runs - self.unpriced_runs

    @property
    def fully_unpriced(self) -> bool:
        """No run of the group has a price: its cost is unknown, not zero."""
        return self.runs > 0 and self.unpriced_runs == self.runs

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.runs if self.runs else None

    @property
    def avg_iterations(self) -> float | None:
        return self.iterations_sum / self.iterations_runs if self.iterations_runs else None

    @property
    def max_turns_share(self) -> float | None:
        """Share of the runs with both iterations and config.maxTurns that used every turn."""
        return self.max_turns_hit / self.max_turns_runs if self.max_turns_runs else None

    def add_usage(self, row: dict) -> None:
        self.runs += row["runs"]
        self.completed += row["completed"]
        self.failed += row["failed"]
        self.input_tokens += row["input_tokens"]
        self.output_tokens += row["output_tokens"]
        self.cached_input_tokens += row["cached_input_tokens"]
        self.reasoning_tokens += row["reasoning_tokens"]
        self.cost += row["cost"]
        self.unpriced_runs += row["unpriced_runs"]
        self.duration_ms_sum += row["duration_ms"]

    def add_stats(self, row: dict) -> None:
        self.partial_runs += row["partial_runs"]
        self.iterations_runs += row["iterations_runs"]
        self.iterations_sum += row["iterations_sum"]
        self.max_turns_runs += row["max_turns_runs"]
        self.max_turns_hit += row["max_turns_hit"]
        self._duration_texts.append(row["duration_buckets"])
        self._first_frame_texts.append(row["first_byte_buckets"])

    def add_group(self, other: GroupRow) -> None:
        """Add another row's numbers (for totals: cheaper than adding every rollup row again)."""
        for name in (
            "runs", "completed", "failed", "input_tokens", "output_tokens",
            "cached_input_tokens", "reasoning_tokens", "cost", "unpriced_runs", "partial_runs",
            "duration_ms_sum", "iterations_runs", "iterations_sum", "max_turns_runs",
            "max_turns_hit",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self._durations.add_histogram(other._durations)
        self._first_frames.add_histogram(other._first_frames)
        self._duration_texts += other._duration_texts  # if it is not finished yet
        self._first_frame_texts += other._first_frame_texts

    def finish(self, *, exact: bool = False) -> None:
        """Read the percentiles: from histograms, or (exact) from counters of the raw values."""
        if exact:
            durations, first_frames = self._exact_durations, self._exact_first_frames
            self.duration_p50_ms = _exact_percentile(durations, 0.50)
            self.duration_p95_ms = _exact_percentile(durations, 0.95)
            self.first_frame_p50_ms = _exact_percentile(first_frames, 0.50)
            self.first_frame_p95_ms = _exact_percentile(first_frames, 0.95)
            return
        self._durations.add_texts(self._duration_texts)
        self._first_frames.add_texts(self._first_frame_texts)
        self._duration_texts, self._first_frame_texts = [], []
        self.duration_p50_ms = self._durations.percentile(0.50)
        self.duration_p95_ms = self._durations.percentile(0.95)
        self.first_frame_p50_ms = self._first_frames.percentile(0.50)
        self.first_frame_p95_ms = self._first_frames.percentile(0.95)

    def as_dict(self) -> dict:
        """The row for JSON and CSV: exact integers, cost as a decimal string."""
        return {
            "key": self.key,
            "label": self.label,
            "runs": self.runs,
            "completed": self.completed,
            "failed": self.failed,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cachedInputTokens": self.cached_input_tokens,
            "reasoningTokens": self.reasoning_tokens,
            "cost": None if self.fully_unpriced else str(self.cost),
            "unpricedRuns": self.unpriced_runs,
            "partialRuns": self.partial_runs,
            "durationP50Ms": _round(self.duration_p50_ms),
            "durationP95Ms": _round(self.duration_p95_ms),
            "firstFrameP50Ms": _round(self.first_frame_p50_ms),
            "firstFrameP95Ms": _round(self.first_frame_p95_ms),
            "avgIterations": None if self.avg_iterations is None else round(self.avg_iterations, 2),
            "maxTurnsHitShare": (
                None if self.max_turns_share is None else round(self.max_turns_share, 4)
            ),
        }


def _round(value: float | None) -> int | None:
    return None if value is None else round(value)


@dataclass
class SpendSeries:
    """Spend per day, stacked by agent (the biggest few; the rest as "other")."""

    days: list[date]
    agents: list[str]
    cost: dict[str, list[Decimal]]  # agent → one amount per day

    def day_totals(self) -> list[Decimal]:
        return [
            sum((self.cost[a][i] for a in self.agents), Decimal(0)) for i in range(len(self.days))
        ]


@dataclass
class Report:
    team: Team
    period: Period
    group_by: str
    rows: list[GroupRow]
    totals: GroupRow
    spend: SpendSeries
    exact_percentiles: bool = False  # thread reports compute them from the runs
    truncated: bool = False

    def as_dict(self) -> dict:
        return {
            "team": self.team.slug,
            "groupBy": self.group_by,
            "since": self.period.since.isoformat(),
            "until": self.period.until.isoformat(),
            "timeZone": str(self.period.zone),
            "percentiles": "exact" if self.exact_percentiles else "histogram (±2.5%)",
            "truncated": self.truncated,
            "groups": [row.as_dict() for row in self.rows],
            "totals": self.totals.as_dict(),
        }


USAGE_SUMS = (
    "runs", "completed", "failed", "input_tokens", "output_tokens", "cached_input_tokens",
    "reasoning_tokens", "cost", "unpriced_runs", "duration_ms",
)  # fmt: skip
STATS_COLUMNS = (
    "day", "dimensions", "runs", "partial_runs", "iterations_runs", "iterations_sum",
    "max_turns_runs", "max_turns_hit", "duration_buckets", "first_byte_buckets",
)  # fmt: skip


def _usage_sums(team: Team, period: Period, keys: tuple[str, ...] = ("day", "agent")) -> list[dict]:
    """The period's DailyUsage summed in the database by `keys` (by default day and agent,
    what the spend chart stacks), whatever the other dimensions: one dict per group with its
    keys and the USAGE_SUMS, exact (runs.core.exact_sums)."""
    sums = sums_of(USAGE_SUMS)
    rows = (
        DailyUsage.objects.filter(team=team, day__gte=period.since, day__lte=period.until)
        .values(*keys)
        .annotate(**sums)
        .values_list(*keys, *sums)
        .order_by()
    )
    usage = []
    for row in rows:
        numbers = read_sums(USAGE_SUMS, row[len(keys) :])
        usage.append(dict(zip((*keys, *USAGE_SUMS), (*row[: len(keys)], *numbers), strict=True)))
    return usage


def _rollup_rows(
    team: Team, period: Period, *, by_group: bool = True
) -> tuple[list[dict], dict[tuple, dict], dict]:
    """The period's usage sums by day and agent (see _usage_sums), its statistics
    rows by (day, dimensions) (only when `by_group`: reports by day, thread or metadata need
    just the whole-day rows), and the statistics of each whole day by day.

    Statistics of a day that disagree with DailyUsage (a run finished without updating them,
    or the usage rollup was rebuilt alone) are rebuilt from that day's runs first.
    """
    window = {"team": team, "day__gte": period.since, "day__lte": period.until}
    usage = _usage_sums(team, period)

    def read_stats():
        stats = DailyRunStats.objects.filter(**window)
        if not by_group:
            stats = stats.filter(dimensions=ALL_DIMENSIONS)
        by_group_rows = {}
        by_day = {}
        for row in stats.values(*STATS_COLUMNS):
            if row["dimensions"] == ALL_DIMENSIONS:
                by_day[row["day"]] = row
            else:
                by_group_rows[row["day"], row["dimensions"]] = row
        return by_group_rows, by_day

    def grouped_counts(rows) -> Counter:
        grouped: Counter = Counter()
        if by_group:
            for (day, _dimensions), row in rows.items():
                grouped[day] += row["runs"]
            return grouped
        # Counted in the database: the rows themselves (histograms) are not needed.
        counts = (
            DailyRunStats.objects.filter(**window)
            .exclude(dimensions=ALL_DIMENSIONS)
            .values("day")
            .annotate(n=Sum("runs"))
            .values_list("day", "n")
            .order_by()
        )
        grouped.update(dict(counts))
        return grouped

    group_rows, by_day = read_stats()
    expected: Counter = Counter()
    for row in usage:
        expected[row["day"]] += row["runs"]
    whole = Counter({day: row["runs"] for day, row in by_day.items()})
    if (grouped_counts(group_rows) != expected or whole != expected) and refresh_stale_days(
        team, period.since, period.until
    ):
        group_rows, by_day = read_stats()
    return usage, group_rows, by_day


def _group_of(dimensions: str, group_by: str):
    """The group key (as usage_report keys its groups) of a statistics row's dimensions,
    "agent|user id|token id|source" (runs.models.usage_dimensions; an agent may hold "|")."""
    agent, user_id, token_id, _source = dimensions.rsplit("|", 3)
    if group_by == "agent":
        return agent
    ids = user_id if group_by == "user" else token_id
    return int(ids) if ids else None


def _labels(team: Team, group_by: str, keys: set) -> dict:
    if group_by == "user":
        users = get_user_model().objects.filter(pk__in=[k for k in keys if k is not None])
        names = {user.pk: user.get_username() for user in users}
        return {k: names.get(k, f"user {k}") if k is not None else "(gateway tokens)" for k in keys}
    if group_by == "token":
        tokens = GatewayToken.objects.filter(team=team, pk__in=[k for k in keys if k])
        names = {token.pk: f"{token.name} ({token.prefix}…)" for token in tokens}
        return {k: names.get(k, f"token {k}") if k is not None else "(playground)" for k in keys}
    return {k: str(k) for k in keys}


def _filters(group_by: str, key, period: Period) -> dict[str, str]:
    filters = {"since": period.since.isoformat(), "until": period.until.isoformat()}
    if group_by == "agent":
        filters["agent"] = key
    elif group_by == "user":
        filters["who"] = f"user:{key}" if key is not None else ""
        filters["source"] = "" if key is not None else "gateway"
    elif group_by == "token":
        filters["who"] = f"token:{key}" if key is not None else ""
        filters["source"] = "" if key is not None else "playground"
    elif group_by == "day":
        filters["since"] = filters["until"] = key.isoformat()
    return {name: value for name, value in filters.items() if value}


GROUP_COLUMNS = {"agent": "agent", "user": "user_id", "token": "token_id", "day": "day"}


def spend_series(usage: list[dict], period: Period, top: int = 6) -> SpendSeries:
    by_agent: dict[str, Decimal] = defaultdict(Decimal)
    for row in usage:
        by_agent[row["agent"]] += row["cost"]
    # Agents without priced spend have nothing to stack (their runs show in the table).
    ranked = sorted(
        (agent for agent, cost in by_agent.items() if cost > 0),
        key=lambda agent: (-by_agent[agent], agent),
    )
    shown = ranked[:top] if len(ranked) <= top else ranked[: top - 1]
    agents = shown + (["other"] if len(ranked) > len(shown) else [])
    index = {day: n for n, day in enumerate(period.days)}
    cost = {agent: [Decimal(0)] * len(index) for agent in agents}
    for row in usage:
        agent = row["agent"] if row["agent"] in shown else "other"
        if row["day"] in index and agent in cost:
            cost[agent][index[row["day"]]] += row["cost"]
    return SpendSeries(period.days, agents, cost)


def usage_report(team: Team, period: Period, group_by: str = "agent") -> Report:
    """The report of `team` for `period`, one row per group, biggest spend first."""
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
    by_day = group_by in ("day", "thread")  # the whole-day statistics are all they need
    usage, stats, day_stats = _rollup_rows(team, period, by_group=not by_day)
    spend = spend_series(usage, period)
    if group_by == "thread":
        return _thread_report(team, period, usage, day_stats, spend)
    column = GROUP_COLUMNS[group_by]
    # By day or agent: the sums by day and agent; by user or token: summed by it alone.
    sums = usage if column in ("day", "agent") else _usage_sums(team, period, (column,))
    groups: dict = {}
    totals = GroupRow(key="", label="All runs")
    for row in sums:
        key = row[column]
        group = groups.get(key)
        if group is None:
            group = groups[key] = GroupRow(key="" if key is None else str(key), label="")
        group.add_usage(row)
    if not by_day:
        # A group adds up the statistics rows of its (day, dimensions) pairs.
        for (_day, dimensions), extra in stats.items():
            group = groups.get(_group_of(dimensions, group_by))
            if group is not None:
                group.add_stats(extra)
    else:
        for day, group in groups.items():
            if day in day_stats:
                group.add_stats(day_stats[day])
    labels = _labels(team, group_by, set(groups))
    for key, group in groups.items():
        group.label = labels[key]
        group.filters = _filters(group_by, key, period)
        group.finish()
        totals.add_group(group)
    totals.finish()
    totals.filters = _filters("", None, period)
    if group_by == "day":
        rows = [groups[key] for key in sorted(groups)]
    else:
        rows = sorted(groups.values(), key=lambda g: (-g.cost, -g.runs, g.label))
    return Report(team, period, group_by, rows, totals, spend)


def all_runs_row(usage, day_stats: dict) -> GroupRow:
    """The report's "All runs" row, from the period's usage sums and whole-day statistics."""
    totals = GroupRow(key="", label="All runs")
    for row in usage:
        totals.add_usage(row)
    for row in day_stats.values():
        totals.add_stats(row)
    totals.finish()
    return totals


def _thread_report(team, period, usage, day_stats, spend) -> Report:
    totals = all_runs_row(usage, day_stats)
    totals.filters = _filters("", None, period)
    ranked, truncated = top_threads(team, period, REPORT_THREADS)
    chosen = [thread_id for thread_id, _cost in ranked]
    named = Thread.objects.filter(team=team, pk__in=chosen).only("pk", "title", "upstream_id")
    threads = {thread.pk: thread for thread in named}
    groups = {pk: GroupRow(key=str(pk), label="") for pk in chosen}
    # By thread alone in SQL, period and team checked beside it (see _counted_in_period).
    details = Run.objects.filter(thread_id__in=chosen).annotate(
        max_turns=KeyTextTransform("maxTurns", "config"), counted=_counted_in_period(team, period)
    )
    for run in details.values(
        "thread_id", "counted", "status", "input_tokens", "output_tokens",
        "cached_input_tokens", "reasoning_tokens", "cost", "cost_status", "duration_ms",
        "first_byte_ms", "iterations", "max_turns",
    ):  # fmt: skip
        if run["counted"]:
            _add_run(groups[run["thread_id"]], run)
    for pk, group in groups.items():
        thread = threads.get(pk)
        group.label = (thread.title or thread.upstream_id) if thread else f"thread {pk}"
        group.key = thread.upstream_id if thread else str(pk)
        group.filters = {
            "thread": group.key,
            "since": period.since.isoformat(),
            "until": period.until.isoformat(),
        }
        group.finish(exact=True)
    rows = [groups[pk] for pk in chosen]
    return Report(team, period, "thread", rows, totals, spend, True, truncated)


def _add_run(group: GroupRow, run: dict) -> None:
    group.runs += 1
    group.completed += run["status"] == RunStatus.COMPLETED
    group.failed += run["status"] in FAILED
    group.input_tokens += run["input_tokens"] or 0
    group.output_tokens += run["output_tokens"] or 0
    group.cached_input_tokens += run["cached_input_tokens"] or 0
    group.reasoning_tokens += run["reasoning_tokens"] or 0
    if run["cost"] is None:
        group.unpriced_runs += 1
    else:
        group.cost += run["cost"]
    group.partial_runs += run["cost_status"] == CostStatus.PARTIAL
    group.duration_ms_sum += run["duration_ms"] or 0
    if run["iterations"] is not None:
        group.iterations_runs += 1
        group.iterations_sum += run["iterations"]
        max_turns = _max_turns(run["max_turns"])
        if max_turns is not None:
            group.max_turns_runs += 1
            group.max_turns_hit += run["iterations"] >= max_turns
    if run["duration_ms"] is not None:
        group._exact_durations[run["duration_ms"]] += 1
    if run["first_byte_ms"] is not None:
        group._exact_first_frames[run["first_byte_ms"]] += 1


def _exact_percentile(values: Counter, fraction: float) -> float | None:
    count = sum(values.values())
    if not count:
        return None
    rank = max(1, math.ceil(fraction * count))
    seen = 0
    for value in sorted(values):
        seen += values[value]
        if seen >= rank:
            return float(value)
    return None


def top_threads(team: Team, period: Period, limit: int) -> tuple[list[tuple[int, Decimal]], bool]:
    """The `limit` threads whose runs in `period` cost the most: [(thread id, cost)], and
    whether more threads had runs in the period.

    Exact without grouping the period's runs: ThreadUsage holds each thread's total cost,
    which bounds its cost in any period from above. Threads are walked by total cost, most
    expensive first; a thread entirely inside the period costs its total there, one that
    straddles the period's edges has its runs in the period added up. The walk stops when
    `limit` threads are known and the next total cannot beat the cheapest of them. Equal
    costs (unpriced threads cost 0) are broken by the most recent activity.
    """
    sync_thread_usage(team)
    start, end = period.start, period.end
    candidates = (
        ThreadUsage.objects.filter(team=team, last_started_at__gte=start, first_started_at__lt=end)
        # Whether the thread has runs outside the period, told by the database: reading the
        # two dates of every candidate into datetimes cost more than the query.
        .annotate(
            straddles=ExpressionWrapper(
                Q(first_started_at__lt=start) | Q(last_started_at__gte=end),
                output_field=BooleanField(),
            )
        )
        .order_by("-cost", "-last_started_at", "-thread_id")  # as thread_usage_by_cost
        .values_list("thread_id", "cost", "straddles")
    )
    best: list[tuple[Decimal, int]] = []  # (cost in the period, thread id), costliest first
    offset, batch, more = 0, 4 * limit, False
    while True:
        chunk = list(candidates[offset : offset + batch])
        offset += batch
        if not chunk:
            break
        straddling = [thread_id for thread_id, _total, straddles in chunk if straddles]
        partial = _costs_in_period(team, straddling, period)
        for thread_id, total, straddles in chunk:
            if len(best) >= limit and total <= best[-1][0]:
                more = True
                return [(pk, cost) for cost, pk in best], more
            if straddles:
                if thread_id not in partial:
                    continue  # its runs are all outside the period
                total = partial[thread_id]
            best.append((total, thread_id))
            best.sort(key=lambda item: -item[0])
            if len(best) > limit:
                best.pop()
                more = True
    return [(pk, cost) for cost, pk in best], more


def _costs_in_period(team: Team, thread_ids: list[int], period: Period) -> dict[int, Decimal]:
    """Each thread's cost in `period` (threads with runs in it only), from its few runs."""
    costs: dict[int, Decimal] = {}
    if not thread_ids:
        return costs
    runs = (
        Run.objects.filter(thread_id__in=thread_ids)
        .annotate(counted=_counted_in_period(team, period))
        .values_list("thread_id", "counted", "cost")
    )
    for thread_id, counted, cost in runs:
        if counted:
            costs[thread_id] = costs.get(thread_id, Decimal(0)) + (cost or 0)
    return costs


def _counted_in_period(team: Team, period: Period) -> ExpressionWrapper:
    """Whether a run counts in the team's report for `period` (the team's, finished, started
    in the period), as a column of the query rather than a filter.

    Runs are selected by thread alone: given the team or the period as a filter, SQLite walks
    the team's runs by date (hundreds of thousands) instead of each thread's handful. Told by
    the database, the flag also spares turning each run's start into a datetime.
    """
    return ExpressionWrapper(
        Q(
            team=team,
            status__in=FINISHED_STATUSES,
            started_at__gte=period.start,
            started_at__lt=period.end,
        ),
        output_field=BooleanField(),
    )
