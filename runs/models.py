"""rtdash's data: teams and their secrets, and every run with what it streamed and cost."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone


class Team(models.Model):
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.slug

    def default_key(self) -> RunToolsKey | None:
        return self.runtools_keys.filter(is_default=True, revoked_at__isnull=True).first()

    def active_keys(self) -> models.QuerySet[RunToolsKey]:
        return self.runtools_keys.filter(revoked_at__isnull=True)


class LastOwnerError(ValueError):
    """The change would leave a team without an owner, and nobody could manage it again."""

    def __init__(self) -> None:
        super().__init__("A team always keeps at least one owner.")


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "team"], name="one_membership_per_team"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"

    @property
    def can_manage(self) -> bool:
        """Owners and admins manage members, keys, tokens, prices and budgets."""
        return self.role in (Role.OWNER, Role.ADMIN)

    @property
    def can_run(self) -> bool:
        return self.role != Role.VIEWER

    @property
    def is_owner(self) -> bool:
        return self.role == Role.OWNER

    def assignable_roles(self) -> list[Role]:
        """The roles this member may give others: only owners make (or unmake) owners."""
        if self.is_owner:
            return list(Role)
        if self.can_manage:
            return [Role.ADMIN, Role.MEMBER, Role.VIEWER]
        return []

    def may_edit(self, other: Membership) -> bool:
        """Whether this member may change `other`'s role or remove them from the team."""
        if other.team_id != self.team_id or not self.can_manage:
            return False
        # An admin could otherwise demote the owners and take the team over.
        return self.is_owner or not other.is_owner

    def _other_owners(self) -> models.QuerySet[Membership]:
        # select_for_update serialises two owners demoting each other at the same moment on
        # PostgreSQL; SQLite already serialises writers (IMMEDIATE transactions).
        return (
            Membership.objects.select_for_update()
            .filter(team_id=self.team_id, role=Role.OWNER)
            .exclude(pk=self.pk)
        )

    def change_role(self, role: Role | str) -> None:
        """Give this member a new role. Raises LastOwnerError for the team's last owner."""
        with transaction.atomic():
            if self.is_owner and role != Role.OWNER and not self._other_owners().exists():
                raise LastOwnerError
            self.role = Role(role)
            self.save(update_fields=["role"])

    def remove(self) -> None:
        """Take this member out of the team. Raises LastOwnerError for the team's last owner."""
        with transaction.atomic():
            if self.is_owner and not self._other_owners().exists():
                raise LastOwnerError
            self.delete()


class RunToolsKey(models.Model):
    """A team's RunTools API key. Only ciphertext is stored; see runs.crypto."""

    team = models.ForeignKey(Team, models.CASCADE, related_name="runtools_keys")
    label = models.CharField(max_length=100)
    ciphertext = models.TextField(editable=False)
    # Enough to recognise a key in a list ("rt_live_…abcd"), never enough to use it.
    kind_prefix = models.CharField(max_length=16, editable=False)
    last_four = models.CharField(max_length=4, editable=False)
    is_default = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["team"],
                condition=models.Q(is_default=True, revoked_at__isnull=True),
                name="one_default_key_per_team",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"{self.kind_prefix}…{self.last_four}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def add(
        cls,
        team: Team,
        label: str,
        plaintext: str,
        *,
        created_by=None,
        make_default: bool = False,
    ) -> RunToolsKey:
        """Store a new key, encrypted. A team's first active key becomes its default."""
        with transaction.atomic():
            key = cls(team=team, label=label, created_by=created_by)
            key.set_secret(plaintext)
            key.save()
            if make_default or team.default_key() is None:
                key.make_default()
        return key

    def make_default(self) -> None:
        """Make this the key the team's runs use. Only an active key can be the default."""
        if not self.is_active:
            raise ValueError("A revoked key cannot be the default.")
        with transaction.atomic():
            # Clear the old default first: the constraint allows one default per team.
            RunToolsKey.objects.filter(team_id=self.team_id, is_default=True).exclude(
                pk=self.pk
            ).update(is_default=False)
            self.is_default = True
            self.save(update_fields=["is_default"])

    def revoke(self) -> RunToolsKey | None:
        """Revoke this key and forget its ciphertext; returns the team's new default, if any.

        A revoked key is never used again, so there is no reason to keep something that
        decrypts to it. When the default is revoked, the newest remaining key takes over so
        the team's runs keep working.
        """
        with transaction.atomic():
            was_default = self.is_default
            self.revoked_at = timezone.now()
            self.is_default = False
            self.ciphertext = ""
            self.save(update_fields=["revoked_at", "is_default", "ciphertext"])
            if not was_default:
                return None
            successor = self.team.active_keys().order_by("-created_at", "-id").first()
            if successor is not None:
                successor.make_default()
            return successor

    def record_test(self, ok: bool) -> None:
        self.last_tested_at = timezone.now()
        self.last_test_ok = ok
        self.save(update_fields=["last_tested_at", "last_test_ok"])

    def set_secret(self, plaintext: str) -> None:
        from runs.crypto import encrypt

        self.ciphertext = encrypt(plaintext)
        self.kind_prefix = _key_kind_prefix(plaintext)
        self.last_four = plaintext[-4:]


def _key_kind_prefix(plaintext: str) -> str:
    for prefix in ("rt_live_", "rt_test_"):
        if plaintext.startswith(prefix):
            return prefix
    return "rt_"


TOKEN_PREFIX = "rtd_"  # noqa: S105 - a prefix, not a secret


def hash_token(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


class GatewayToken(models.Model):
    """An rtdash token for scripts. The plaintext is shown once; only its SHA-256 is kept."""

    team = models.ForeignKey(Team, models.CASCADE, related_name="gateway_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, team: Team, name: str, **fields) -> tuple[GatewayToken, str]:
        """Create a token and return it with its plaintext, which is never stored."""
        plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            team=team,
            name=name,
            prefix=plaintext[:12],
            token_hash=hash_token(plaintext),
            **fields,
        )
        return token, plaintext

    def is_usable(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now

    @property
    def status(self) -> str:
        """One of active, expired or revoked: for lists and badges."""
        if self.revoked_at is not None:
            return "revoked"
        return "active" if self.is_usable() else "expired"

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class AuditEvent(models.Model):
    """Append-only record of who did what. Never holds a secret."""

    team = models.ForeignKey(Team, models.CASCADE, null=True, blank=True, related_name="audit")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Kept as text so the log still says who it was after the user is deleted.
    actor_label = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=50)
    target = models.CharField(max_length=200, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # The team's audit page, newest first.
            models.Index(fields=["team", "-created_at"], name="audit_team_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.target}"

    def save(self, *args, **kwargs) -> None:
        # Append-only: an event, once written, is evidence and is never rewritten.
        if not self._state.adding:
            raise ValueError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Audit events are append-only.")


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


# --- Prices, budgets and the statistics reports need beyond the usage rollup ----------------

# Prices are dollars per million tokens with at most three decimals: a token then costs a whole
# number of nano-dollars, so a run's cost (9 decimal places) is exact, never rounded.
PRICE_DIGITS = {"max_digits": 12, "decimal_places": 3}


class Price(models.Model):
    """What a million tokens cost a team, from a date on: its default, or one agent's override.

    The price in force for a run is the one for its agent (else the team default, `agent=""`)
    with the latest `effective_from` on or before the UTC date the run started.
    """

    team = models.ForeignKey(Team, models.CASCADE, related_name="prices")
    agent = models.CharField(max_length=200, blank=True, help_text="Blank: the team default")
    effective_from = models.DateField()
    input_per_million = models.DecimalField(**PRICE_DIGITS)
    output_per_million = models.DecimalField(**PRICE_DIGITS)
    # Blank means "like uncached input" / "like output".
    cached_input_per_million = models.DecimalField(**PRICE_DIGITS, null=True, blank=True)
    reasoning_per_million = models.DecimalField(**PRICE_DIGITS, null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["team", "agent", "effective_from"], name="one_price_per_agent_and_date"
            ),
        ]
        indexes = [
            # The price in force: a team's prices for an agent (or the default), latest first.
            models.Index(fields=["team", "agent", "-effective_from"], name="price_in_force"),
        ]

    def __str__(self) -> str:
        return f"{self.team} {self.agent or 'default'} from {self.effective_from}"

    @property
    def cached_rate(self):
        cached = self.cached_input_per_million
        return self.input_per_million if cached is None else cached

    @property
    def reasoning_rate(self):
        reasoning = self.reasoning_per_million
        return self.output_per_million if reasoning is None else reasoning


class Budget(models.Model):
    """A monthly spending limit for a team (`agent=""`) or for one of its agents."""

    team = models.ForeignKey(Team, models.CASCADE, related_name="budgets")
    agent = models.CharField(max_length=200, blank=True, help_text="Blank: the whole team")
    monthly_limit = models.DecimalField(max_digits=14, decimal_places=2)
    warn_percent = models.PositiveSmallIntegerField(default=80)
    hard_stop = models.BooleanField(default=False)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "agent"], name="one_budget_per_scope"),
        ]

    def __str__(self) -> str:
        return f"{self.team} {self.agent or 'team'} ${self.monthly_limit}/month"


class BudgetAlert(models.Model):
    """That a budget crossed its warning threshold (or its limit) in a month: written once, so
    the audit event for it is written once."""

    budget = models.ForeignKey(Budget, models.CASCADE, related_name="alerts")
    month = models.DateField(help_text="The first day of the month")
    level = models.CharField(max_length=10)  # "warning" or "exceeded"
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "month", "level"], name="one_alert_per_budget_month_level"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.budget} {self.month:%Y-%m} {self.level}"


class DailyRunStats(models.Model):
    """What reports need beyond DailyUsage's sums, for the same (team, day, dimensions) groups.

    Percentiles cannot be added up, so durations and times to first frame are kept as
    log-scale histograms (see runs.run_stats): merging a period's histograms gives p50/p95
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
    (see runs.reports.top_threads). Brought up to date from the runs of recently active
    threads (runs.run_stats.sync_thread_usage), so it needs no hook in the finishing path.
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
