"""Every run with its thread, what it streamed, and what it cost."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from runs.models.teams import GatewayToken, Team


class Thread(models.Model):
    """rtdash's record of an upstream thread, one per (team, upstream thread id)."""

    team = models.ForeignKey(Team, models.CASCADE, related_name="threads")
    upstream_id = models.CharField(max_length=200)
    agent = models.CharField(max_length=200)
    title = models.CharField(max_length=200, blank=True)
    turns = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    archived = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_activity_at = models.DateTimeField(default=timezone.now)
    # Deleted upstream: content is gone, but its runs' usage still counts in reports.
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "upstream_id"], name="one_thread_per_team_id"),
        ]
        indexes = [
            # The threads page, most recently active first.
            models.Index(fields=["team", "-last_activity_at"], name="thread_team_recent"),
        ]

    def __str__(self) -> str:
        return self.title or self.upstream_id


class Source(models.TextChoices):
    GATEWAY = "gateway", "Gateway"
    PLAYGROUND = "playground", "Playground"
    EXPERIMENT = "experiment", "Experiment"


class RunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    REGISTERED = "registered", "Registered"
    DISPATCHED = "dispatched", "Dispatched"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    INTERRUPTED = "interrupted", "Interrupted"


FINISHED_STATUSES = frozenset(RunStatus.values) - {RunStatus.RUNNING}


class CostStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    COMPUTED = "computed", "Computed"
    PARTIAL = "partial", "Partial"
    UNPRICED = "unpriced", "Unpriced"


class Run(models.Model):
    # No index of its own: the indexes below that start with team serve every lookup by team
    # (one index less to write per run).
    team = models.ForeignKey(Team, models.CASCADE, related_name="runs", db_index=False)
    source = models.CharField(max_length=10, choices=Source.choices)
    token = models.ForeignKey(
        GatewayToken, models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    # What was asked.
    agent = models.CharField(max_length=200)
    prompt = models.TextField(blank=True)
    messages = models.JSONField(null=True, blank=True)
    config = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    stream = models.BooleanField(default=True)
    legacy_path = models.BooleanField(default=False)
    # What the upstream said.
    thread = models.ForeignKey(Thread, models.SET_NULL, null=True, blank=True, related_name="runs")
    upstream_thread_id = models.CharField(max_length=200, blank=True)
    upstream_run_id = models.CharField(max_length=200, blank=True)
    sandbox_id = models.CharField(max_length=200, blank=True)
    execution_mode = models.CharField(max_length=50, blank=True)
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.RUNNING)
    result = models.TextField(blank=True)
    iterations = models.PositiveIntegerField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    error_message = models.TextField(blank=True)
    # Usage: a field RunTools did not send stays NULL, never 0.
    input_tokens = models.BigIntegerField(null=True, blank=True)
    output_tokens = models.BigIntegerField(null=True, blank=True)
    cached_input_tokens = models.BigIntegerField(null=True, blank=True)
    reasoning_tokens = models.BigIntegerField(null=True, blank=True)
    total_tokens = models.BigIntegerField(null=True, blank=True)
    usage = models.JSONField(null=True, blank=True, help_text="The usage object as sent")
    cost = models.DecimalField(max_digits=20, decimal_places=9, null=True, blank=True)
    cost_status = models.CharField(
        max_length=10, choices=CostStatus.choices, default=CostStatus.PENDING
    )
    # Timings. Durations are kept in milliseconds so reports can aggregate them in SQL.
    started_at = models.DateTimeField(default=timezone.now)
    first_byte_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    first_byte_ms = models.PositiveIntegerField(null=True, blank=True)
    upstream_ms = models.PositiveIntegerField(null=True, blank=True)
    overhead_ms = models.FloatField(null=True, blank=True)
    frame_count = models.PositiveIntegerField(default=0)
    # Who is reading the upstream right now, and when it last said so; the reaper ends runs
    # whose reader stopped saying so.
    reader = models.CharField(max_length=100, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Following a run whose end RunTools had not told yet (registered, dispatched, or cut off
    # before its final frame): when to look it up next (NULL: nothing to follow), how many
    # lookups were made, and until when one worker holds it (runs.pipeline.follow).
    follow_next_at = models.DateTimeField(null=True, blank=True)
    follow_attempts = models.PositiveSmallIntegerField(default=0)
    follow_lease_until = models.DateTimeField(null=True, blank=True)
    # Written by `seed_history` for benchmarks; never mixed up with real runs.
    synthetic = models.BooleanField(default=False)

    class Meta:
        indexes = [
            # The runs list, newest first, keyset-paginated on (started_at, id).
            models.Index(fields=["team", "-started_at", "-id"], name="run_team_recent"),
            # The runs list filtered by agent, status, who ran it (user or token) or source,
            # newest first. Each ends in -id like the list's ORDER BY, so the index alone gives
            # the order and a filter value with few runs is a seek, not a walk through every
            # run of the team (500 ms at a million runs without them).
            models.Index(
                fields=["team", "agent", "-started_at", "-id"], name="run_team_agent_recent"
            ),
            models.Index(
                fields=["team", "status", "-started_at", "-id"], name="run_team_status_recent"
            ),
            models.Index(
                fields=["team", "user", "-started_at", "-id"], name="run_team_user_recent"
            ),
            models.Index(
                fields=["team", "token", "-started_at", "-id"], name="run_team_token_recent"
            ),
            models.Index(
                fields=["team", "source", "-started_at", "-id"], name="run_team_source_recent"
            ),
            # One thread's runs: the thread page, the runs list's thread filter, and removing a
            # deleted thread's content (by upstream id: a run is linked to its Thread row only
            # once it finishes).
            models.Index(
                fields=["team", "upstream_thread_id", "started_at"], name="run_team_thread"
            ),
            # The reaper's scan for runs that are still marked running.
            models.Index(
                fields=["heartbeat_at"],
                condition=models.Q(status="running"),
                name="run_running_heartbeat",
            ),
            # The follower's scan for runs due a lookup; only runs being followed are in it.
            models.Index(
                fields=["follow_next_at"],
                condition=models.Q(follow_next_at__isnull=False),
                name="run_follow_due",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} {self.agent} {self.status}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES


class RunEvent(models.Model):
    """One SSE frame as it came from the upstream; `data` is the raw data text."""

    # No index of its own: the (run, sequence) constraint's index serves every lookup by run,
    # and one index less to write per frame stores a 10,000-delta stream 15% faster.
    run = models.ForeignKey(Run, models.CASCADE, related_name="events", db_index=False)
    sequence = models.PositiveIntegerField()
    event = models.CharField(max_length=100, blank=True)
    data = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "sequence"], name="one_event_per_sequence"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.sequence} {self.event}"
