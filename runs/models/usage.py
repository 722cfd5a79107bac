"""Rollups of finished runs that reports read: daily sums, daily statistics, per-thread totals."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from runs.models.runs import Source, Thread
from runs.models.teams import GatewayToken, Team


def usage_dimensions(agent: str, user_id: int | None, token_id: int | None, source: str) -> str:
    """The rollups' group key: "agent|user id|token id|source" (ids empty when NULL)."""
    return f"{agent}|{user_id or ''}|{token_id or ''}|{source}"


class DailyUsage(models.Model):
    """Per-day rollup of finished runs, updated in the transaction that finishes each run.

    `dimensions` is "agent|user id|token id|source" so the rollup has one row per group even
    where user or token is NULL (NULLs are never equal in a unique constraint).
    """

    team = models.ForeignKey(Team, models.CASCADE, related_name="daily_usage")
    day = models.DateField()
    dimensions = models.CharField(max_length=300)
    agent = models.CharField(max_length=200)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    token = models.ForeignKey(
        GatewayToken, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    source = models.CharField(max_length=10, choices=Source.choices)
    runs = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=24, decimal_places=9, default=0)
    unpriced_runs = models.PositiveIntegerField(default=0)
    duration_ms = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["team", "day", "dimensions"], name="one_rollup_row_per_group"
            ),
        ]
        indexes = [
            # Reports read a team's days in a period.
            models.Index(fields=["team", "day"], name="usage_team_day"),
        ]

    def __str__(self) -> str:
        return f"{self.team} {self.day} {self.dimensions}"


class DailyRunStats(models.Model):
    """What reports need beyond DailyUsage's sums, for the same (team, day, dimensions) groups.

    Percentiles cannot be added up, so durations and times to first frame are kept as
    log-scale histograms (see runs.pipeline.stats): merging a period's histograms gives p50/p95
    within 2.5% without reading a single run. They are stored as text, "first bucket:count,
    count,…", which a report splits and adds up far faster than it could decode JSON. `runs`
    is the count of runs described, checked against DailyUsage.runs so a stale day is noticed
    and rebuilt.
    """

    team = models.ForeignKey(Team, models.CASCADE, related_name="+")
    day = models.DateField()
    dimensions = models.CharField(max_length=300)
    runs = models.PositiveIntegerField(default=0)
    partial_runs = models.PositiveIntegerField(default=0)
    iterations_runs = models.PositiveIntegerField(default=0)
    iterations_sum = models.BigIntegerField(default=0)
    max_turns_runs = models.PositiveIntegerField(default=0)
    max_turns_hit = models.PositiveIntegerField(default=0)
    duration_buckets = models.TextField(blank=True, default="")
    first_byte_buckets = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["team", "day", "dimensions"], name="one_stats_row_per_group"
            ),
        ]
        indexes = [
            # Reports read a team's days in a period, next to the DailyUsage rows.
            models.Index(fields=["team", "day"], name="run_stats_team_day"),
        ]

    def __str__(self) -> str:
        return f"{self.team} {self.day} {self.dimensions}"


class ThreadUsage(models.Model):
    """Each thread's runs and spend over its whole life, and when its first and last runs began.

    The thread report wants the most expensive threads of a period without grouping a million
    runs: it walks threads by total cost (an upper bound of their cost in any period) through
    `thread_usage_costliest` and stops as soon as no further thread can beat the ones it has
    (see runs.reports.queries.top_threads). Brought up to date from the runs of recently active
    threads (runs.pipeline.stats.sync_thread_usage), so it needs no hook in the finishing path.
    """

    team = models.ForeignKey(Team, models.CASCADE, related_name="+")
    thread = models.OneToOneField(Thread, models.CASCADE, related_name="usage")
    runs = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=24, decimal_places=9, default=0)
    unpriced_runs = models.PositiveIntegerField(default=0)
    first_started_at = models.DateTimeField()
    last_started_at = models.DateTimeField()

    class Meta:
        indexes = [
            # The thread report and the overview: a team's threads, costliest first, with the
            # span of their runs in the index so threads outside a period are skipped in it.
            models.Index(
                fields=["team", "-cost", "-last_started_at", "-thread", "first_started_at"],
                name="thread_usage_by_cost",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.thread} ${self.cost}"


class ThreadUsageSync(models.Model):
    """When a team's ThreadUsage was last brought up to date: threads active since then (less
    a margin for transactions still committing) are recomputed on the next read."""

    team = models.OneToOneField(Team, models.CASCADE, related_name="+")
    synced_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.team} threads synced at {self.synced_at}"


# --- Spend by a metadata key ------------------------------------------------------------------

# Bounds of the metadata rollup (runs.pipeline.meta_usage): the keys a team's runs are grouped
# by, the distinct values a key keeps a day (the rest add up under OTHER_META_VALUE), and the
# characters of a value that count.
META_KEYS_PER_TEAM = 20
META_VALUES_PER_DAY = 500
META_VALUE_LENGTH = 100
META_KEY_LENGTH = 64
OTHER_META_VALUE = "(other)"


class MetaKey(models.Model):
    """A metadata key a team's reports can group by: the first META_KEYS_PER_TEAM keys its
    runs carried. `slot` (unique per team, below the bound) makes the bound atomic: two runs
    claiming the last place cannot both get it."""

    team = models.ForeignKey(Team, models.CASCADE, related_name="+")
    key = models.CharField(max_length=META_KEY_LENGTH)
    slot = models.PositiveSmallIntegerField()
    first_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "key"], name="one_meta_key_per_team"),
            models.UniqueConstraint(fields=["team", "slot"], name="one_meta_key_per_slot"),
        ]

    def __str__(self) -> str:
        return f"{self.team} meta:{self.key}"


class DailyMetaUsage(models.Model):
    """Per-day sums of finished runs by the value of one tracked metadata key, written in the
    transaction that finishes each run, beside DailyUsage. Runs without the key are not here:
    a report's "(none)" row is DailyUsage's total less these rows."""

    team = models.ForeignKey(Team, models.CASCADE, related_name="+")
    day = models.DateField()
    key = models.CharField(max_length=META_KEY_LENGTH)
    value = models.CharField(max_length=META_VALUE_LENGTH)
    runs = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=24, decimal_places=9, default=0)
    unpriced_runs = models.PositiveIntegerField(default=0)
    partial_runs = models.PositiveIntegerField(default=0)
    duration_ms = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["team", "key", "day", "value"], name="one_meta_row_per_value"
            ),
        ]
        # The unique constraint's index also serves the reports: a team's key over a period.

    def __str__(self) -> str:
        return f"{self.team} {self.day} {self.key}={self.value}"
