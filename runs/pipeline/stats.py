"""The statistics rollup beside DailyUsage: percentiles, iterations, maxTurns and partial costs.

DailyUsage holds sums, which is all most report columns need. Percentiles cannot be summed,
so each (team, day, dimensions) group also keeps log-scale histograms of run durations and of
times to the first frame. Bucket `b >= 1` holds values in [g^(b-1), g^b) milliseconds with
g = 1.05 (bucket 0 holds values under 1 ms); a percentile read from the merged histogram is the
bucket's geometric middle, within ±2.5% of the exact value, however many runs went in. (The
exact nearest-rank percentile falls in some bucket; the middle of that bucket is within a
factor g^0.5 of anything in it.)

The rows are kept in step with finished runs by `record_run_stats` (per run) and
`rebuild_run_stats` (a range of days, from the runs). `refresh_stale_days` compares each day's
run count with DailyUsage's and rebuilds any day that disagrees, so a missed update (or a
rollup rebuilt by a command that does not know about these rows) only costs one rebuild of
that day on the next report.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, timedelta
from decimal import Decimal
from operator import add

from django.db import IntegrityError, transaction
from django.db.models import BigIntegerField, Count, DecimalField, Max, Min, Q, Sum, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce
from django.utils import timezone

from runs.core import sql as fastsql
from runs.core.days import day_start, run_day, zone_named
from runs.models import (
    FINISHED_STATUSES,
    CostStatus,
    DailyRunStats,
    DailyUsage,
    Run,
    Team,
    Thread,
    ThreadUsage,
    ThreadUsageSync,
    usage_dimensions,
)

GAMMA = 1.05
_LOG_GAMMA = math.log(GAMMA)


def bucket_of(ms: float) -> int:
    """The histogram bucket of a duration in milliseconds."""
    if ms < 1:
        return 0
    return 1 + int(math.log(ms) / _LOG_GAMMA)


def bucket_value(bucket: int) -> float:
    """The value a bucket stands for: its geometric middle (bucket 0: zero)."""
    if bucket <= 0:
        return 0.0
    return GAMMA ** (bucket - 0.5)


MAX_BUCKET = 511  # g^511 ms is about two years: anything longer is counted there


def parse_buckets(text: str) -> tuple[int, list[int]]:
    """A stored histogram as (first bucket, dense counts); (0, []) for an empty one."""
    if not text:
        return 0, []
    first, _, rest = text.partition(":")
    return int(first), list(map(int, rest.split(",")))


class Histogram:
    """Counts per bucket in a fixed list, merged from stored text at C speed."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = [0] * (MAX_BUCKET + 1)

    def add(self, bucket: int, count: int = 1) -> None:
        self.counts[min(bucket, MAX_BUCKET)] += count

    def add_text(self, text: str) -> None:
        """Add a stored histogram: "first bucket:count,count,…" (empty: nothing)."""
        self.add_counts(*parse_buckets(text))

    def add_counts(self, start: int, added: list[int]) -> None:
        """Add dense counts for the buckets from `start` on (see parse_buckets)."""
        end = start + len(added)
        self.counts[start:end] = map(add, self.counts[start:end], added)

    def add_texts(self, texts: Iterable[str]) -> None:
        """Add many stored histograms: what a report does with a period's rows. The counts
        after the colon are JSON's list syntax without its brackets, and json.loads reads them
        faster than splitting and converting each number: all of them in one call, as a list
        of lists, since a call per histogram costs about as much as its numbers."""
        starts, lists = [], []
        for text in texts:
            if text:
                first, _, rest = text.partition(":")
                starts.append(int(first))
                lists.append(rest)
        if not lists:
            return
        counts = self.counts
        for start, added in zip(starts, json.loads(f"[[{'],['.join(lists)}]]"), strict=True):
            end = start + len(added)
            counts[start:end] = map(add, counts[start:end], added)

    def add_histogram(self, other: Histogram) -> None:
        self.counts = list(map(add, self.counts, other.counts))

    @property
    def total(self) -> int:
        return sum(self.counts)

    def percentile(self, fraction: float) -> float | None:
        """Nearest-rank percentile, as the bucket's geometric middle; None when empty."""
        total = self.total
        if total == 0:
            return None
        rank = max(1, math.ceil(fraction * total))
        seen = 0
        for bucket, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return bucket_value(bucket)
        return None  # unreachable: seen ends at total

    def text(self) -> str:
        """The stored form: dense counts from the first used bucket to the last."""
        used = [bucket for bucket, count in enumerate(self.counts) if count]
        if not used:
            return ""
        first, last = used[0], used[-1]
        return f"{first}:" + ",".join(map(str, self.counts[first : last + 1]))

    @staticmethod
    def with_one_more(text: str, bucket: int | None) -> str:
        """A stored histogram with one more count in `bucket` (None: unchanged), as
        `Histogram.of(text)`, `add(bucket)` and `text()` would make it, without a list of
        every bucket: every run's finish does this four times."""
        if bucket is None:
            return text
        bucket = min(bucket, MAX_BUCKET)
        start, counts = parse_buckets(text)
        if not counts:
            return f"{bucket}:1"
        if bucket < start:
            counts[:0] = [0] * (start - bucket)
            start = bucket
        elif bucket >= start + len(counts):
            counts.extend([0] * (bucket - start - len(counts) + 1))
        counts[bucket - start] += 1
        return f"{start}:" + ",".join(map(str, counts))

    @classmethod
    def of(cls, text: str) -> Histogram:
        histogram = cls()
        histogram.add_text(text)
        return histogram


# The statistics of all of a day's runs, whatever their group: reports by day, and the totals
# of the thread report, merge one row a day instead of one per group.
ALL_DIMENSIONS = "*"


def _max_turns(config) -> int | None:
    value = config.get("maxTurns") if isinstance(config, dict) else config
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


class _Group:
    __slots__ = ("durations", "first_bytes", "hit", "iterations", "iterations_sum", "partial",
                 "runs", "turns")  # fmt: skip

    def __init__(self) -> None:
        self.runs = self.partial = self.iterations = self.iterations_sum = 0
        self.turns = self.hit = 0
        self.durations = Histogram()
        self.first_bytes = Histogram()

    def add(self, cost_status, iterations, max_turns, duration_ms, first_byte_ms) -> None:
        self.runs += 1
        self.partial += cost_status == CostStatus.PARTIAL
        if iterations is not None:
            self.iterations += 1
            self.iterations_sum += iterations
            if max_turns is not None:
                self.turns += 1
                self.hit += iterations >= max_turns
        if duration_ms is not None:
            self.durations.add(bucket_of(duration_ms))
        if first_byte_ms is not None:
            self.first_bytes.add(bucket_of(first_byte_ms))

    def merge(self, other: _Group) -> None:
        self.runs += other.runs
        self.partial += other.partial
        self.iterations += other.iterations
        self.iterations_sum += other.iterations_sum
        self.turns += other.turns
        self.hit += other.hit
        self.durations.add_histogram(other.durations)
        self.first_bytes.add_histogram(other.first_bytes)

    def counters(self) -> dict:
        return {
            "runs": self.runs,
            "partial_runs": self.partial,
            "iterations_runs": self.iterations,
            "iterations_sum": self.iterations_sum,
            "max_turns_runs": self.turns,
            "max_turns_hit": self.hit,
        }

    def fields(self) -> dict:
        return {
            **self.counters(),
            "duration_buckets": self.durations.text(),
            "first_byte_buckets": self.first_bytes.text(),
        }


def _value(run: Run, deferred: set[str], name: str):
    # finish_run loads only some columns: one it neither loaded nor set is still NULL.
    return None if name in deferred else getattr(run, name)


def record_run_stats(run: Run) -> None:
    """Add one finished run to its group's statistics row and to its day's (call beside
    record_usage)."""
    deferred = run.get_deferred_fields()
    values = (
        run.cost_status,
        _value(run, deferred, "iterations"),
        _max_turns(_value(run, deferred, "config")),
        _value(run, deferred, "duration_ms"),
        _value(run, deferred, "first_byte_ms"),
    )
    day = run_day(run)  # in the team's time zone, as record_usage counts it
    dimensions = usage_dimensions(run.agent, run.user_id, run.token_id, run.source)
    run_alone = _Group()
    run_alone.add(*values)
    duration_ms, first_byte_ms = values[3], values[4]
    buckets = (
        None if duration_ms is None else bucket_of(duration_ms),
        None if first_byte_ms is None else bucket_of(first_byte_ms),
    )
    for key in (dimensions, ALL_DIMENSIONS):
        _add_to_row({"team_id": run.team_id, "day": day, "dimensions": key}, run_alone, buckets)


def _add_to_row(
    key: dict, group: _Group, one_run_buckets: tuple[int | None, int | None] | None = None
) -> None:
    """Add a group to its statistics row (created on first use), in prepared SQL: this runs
    twice for every finished run (see runs.core.sql).

    A group of one run, whose duration and first byte fell in `one_run_buckets`, is added to
    the stored histograms' text directly (the finish's path); any other group (a run taken
    back, negated) through whole histograms, and it is changed on the way."""
    with transaction.atomic():
        # Twice at most: a row inserted by a concurrent run between our read and our insert
        # is read and added to on the second pass.
        for _attempt in range(2):
            row = fastsql.stats_row_for_update(key["team_id"], key["day"], key["dimensions"])
            if row is None:
                created = DailyRunStats(**key, **group.fields())
                if fastsql.insert_if_absent(created, ("team", "day", "dimensions")) is not None:
                    return
                continue
            pk, durations, first_bytes = row
            if one_run_buckets is None:
                group.durations.add_text(durations)
                group.first_bytes.add_text(first_bytes)
                durations, first_bytes = group.durations.text(), group.first_bytes.text()
            else:
                durations = Histogram.with_one_more(durations, one_run_buckets[0])
                first_bytes = Histogram.with_one_more(first_bytes, one_run_buckets[1])
            histograms = {"duration_buckets": durations, "first_byte_buckets": first_bytes}
            fastsql.add_to_row(DailyRunStats, pk, added=group.counters(), replaced=histograms)
            return
        raise IntegrityError(f"no statistics row for {key} after inserting one")


def _day_bounds(since: date | None, until: date | None, zones: list) -> dict:
    """Bounds on started_at that hold every run whose day, in any of `zones`, is in
    [since, until] (the days themselves are checked run by run)."""
    lookup = {}
    if since is not None:
        lookup["started_at__gte"] = min(day_start(since, zone) for zone in zones)
    if until is not None:
        lookup["started_at__lt"] = max(day_start(until + timedelta(days=1), z) for z in zones)
    return lookup


def rebuild_run_stats(
    team: Team | int | None = None, since: date | None = None, until: date | None = None
) -> int:
    """Rebuild the statistics rows of `team` (or every team) for [since, until] from the runs,
    each team's days in its own time zone.

    Reads only the columns it needs, in one pass; returns the number of runs counted.
    """
    team_id = team.pk if isinstance(team, Team) else team
    teams = Team.objects.all() if team_id is None else Team.objects.filter(pk=team_id)
    zones = {pk: zone_named(name) for pk, name in teams.values_list("pk", "timezone")}
    if not zones:
        return 0
    runs = Run.objects.filter(
        status__in=FINISHED_STATUSES, **_day_bounds(since, until, list(zones.values()))
    )
    rows = DailyRunStats.objects.all()
    if team_id is not None:
        runs, rows = runs.filter(team_id=team_id), rows.filter(team_id=team_id)
    if since is not None:
        rows = rows.filter(day__gte=since)
    if until is not None:
        rows = rows.filter(day__lte=until)
    groups: dict[tuple, _Group] = defaultdict(_Group)
    days: dict[tuple, _Group] = defaultdict(_Group)
    columns = runs.annotate(max_turns=KeyTextTransform("maxTurns", "config")).values_list(
        "team_id", "started_at", "agent", "user_id", "token_id", "source", "cost_status",
        "iterations", "max_turns", "duration_ms", "first_byte_ms",
    )  # fmt: skip
    for (team_pk, started_at, agent, user_id, token_id, source, cost_status, iterations,
         max_turns, duration_ms, first_byte_ms) in columns.iterator(chunk_size=10_000):  # fmt: skip
        day = started_at.astimezone(zones.get(team_pk, UTC)).date()
        if (since is not None and day < since) or (until is not None and day > until):
            continue  # inside the bounds of another team's zone, not of its own
        key = (team_pk, day, agent, user_id, token_id, source)
        groups[key].add(cost_status, iterations, _max_turns(max_turns), duration_ms,
                        first_byte_ms)  # fmt: skip
    new_rows = []
    for (team_pk, day, agent, user_id, token_id, source), group in groups.items():
        dimensions = usage_dimensions(agent, user_id, token_id, source)
        new_rows.append(DailyRunStats(team_id=team_pk, day=day, dimensions=dimensions,
                                      **group.fields()))  # fmt: skip
        days[team_pk, day].merge(group)
    new_rows += [
        DailyRunStats(team_id=team_pk, day=day, dimensions=ALL_DIMENSIONS, **group.fields())
        for (team_pk, day), group in days.items()
    ]
    with transaction.atomic():
        rows.delete()
        DailyRunStats.objects.bulk_create(new_rows, batch_size=2000)
    return sum(group.runs for group in groups.values())


def stale_days(team: Team, since: date, until: date) -> list[date]:
    """Days whose statistics do not describe the same runs as DailyUsage says they had."""
    usage = dict(
        DailyUsage.objects.filter(team=team, day__gte=since, day__lte=until)
        .values("day")
        .annotate(n=Sum("runs"))
        .values_list("day", "n")
        .order_by()
    )
    stats = (
        DailyRunStats.objects.filter(team=team, day__gte=since, day__lte=until)
        .values("day")
        .annotate(
            n=Sum("runs", filter=~Q(dimensions=ALL_DIMENSIONS)),
            all=Sum("runs", filter=Q(dimensions=ALL_DIMENSIONS)),
        )
        .values_list("day", "n", "all")
        .order_by()
    )
    counted = {day: (n, n_all) for day, n, n_all in stats}
    return sorted(
        day
        for day in usage.keys() | counted.keys()
        if counted.get(day, (None, None)) != (usage.get(day), usage.get(day))
    )


def refresh_stale_days(team: Team, since: date, until: date) -> list[date]:
    """Rebuild the statistics of every stale day in [since, until]; returns those days."""
    days = stale_days(team, since, until)
    for day in days:
        rebuild_run_stats(team, day, day)
    return days


# --- Per-thread totals ----------------------------------------------------------------------

# Threads whose activity is this close to the last sync are looked at again, so a run whose
# finishing transaction was still open during the last sync is never missed.
SYNC_MARGIN = timedelta(minutes=2)
_ID_CHUNK = 500
THREAD_USAGE_COLUMNS = (
    "team", "thread", "runs", "cost", "unpriced_runs", "first_started_at", "last_started_at",
)  # fmt: skip


def _thread_usage_rows(team_id: int, runs) -> list[ThreadUsage]:
    groups = (
        runs.filter(thread__isnull=False)
        .values("thread_id")
        .annotate(
            n=Count("pk"),
            total=Coalesce(Sum("cost"), Decimal(0), output_field=DecimalField()),
            unpriced=Count("pk", filter=Q(cost__isnull=True)),
            first=Min("started_at"),
            last=Max("started_at"),
        )
        .order_by()
    )
    return [
        ThreadUsage(
            team_id=team_id,
            thread_id=group["thread_id"],
            runs=group["n"],
            cost=group["total"],
            unpriced_runs=group["unpriced"],
            first_started_at=group["first"],
            last_started_at=group["last"],
        )
        for group in groups.iterator(chunk_size=10_000)
    ]


def rebuild_thread_usage(team: Team) -> int:
    """Recompute every thread's totals of `team` from its runs; returns the threads counted.

    One INSERT … SELECT … GROUP BY in the database: building 600,000 rows in Python and
    inserting them with bulk_create took 40 s at a million runs.
    """
    started = timezone.now()
    groups = (
        Run.objects.filter(team=team, status__in=FINISHED_STATUSES, thread__isnull=False)
        .values("thread_id")
        .annotate(
            team_ref=Value(team.pk, output_field=BigIntegerField()),
            n=Count("pk"),
            total=Coalesce(Sum("cost"), Decimal(0), output_field=DecimalField()),
            unpriced=Count("pk", filter=Q(cost__isnull=True)),
            first=Min("started_at"),
            last=Max("started_at"),
        )
        .values_list("team_ref", "thread_id", "n", "total", "unpriced", "first", "last")
        .order_by()
    )
    with transaction.atomic():
        ThreadUsage.objects.filter(team=team).delete()
        inserted = fastsql.insert_from_select(ThreadUsage, THREAD_USAGE_COLUMNS, groups)
        ThreadUsageSync.objects.update_or_create(team=team, defaults={"synced_at": started})
    return inserted


def sync_thread_usage(team: Team) -> int:
    """Bring `team`'s thread totals up to date: the threads active since the last sync are
    recomputed from their runs (the first time, all of them). Returns the threads looked at."""
    state = ThreadUsageSync.objects.filter(team=team).first()
    if state is None:
        return rebuild_thread_usage(team)
    started = timezone.now()
    active = list(
        Thread.objects.filter(
            team=team, last_activity_at__gte=state.synced_at - SYNC_MARGIN
        ).values_list("pk", flat=True)
    )
    if not active:
        # Nothing to do, so nothing written: the next sync looks back from the same moment
        # (a read of the reports must not cost a write while nothing happens).
        return 0
    for start in range(0, len(active), _ID_CHUNK):
        chunk = active[start : start + _ID_CHUNK]
        runs = Run.objects.filter(team=team, status__in=FINISHED_STATUSES, thread_id__in=chunk)
        rows = _thread_usage_rows(team.pk, runs)
        with transaction.atomic():
            ThreadUsage.objects.filter(team=team, thread_id__in=chunk).delete()
            ThreadUsage.objects.bulk_create(rows)
    ThreadUsageSync.objects.filter(team=team).update(synced_at=started)
    return len(active)
