"""Alerts: the rules a team's owners and admins set, where alerts go, and what was sent.

A rule is either quiet or firing. Moving between the two is one conditional UPDATE
(runs.operations.alerts), so however many workers evaluate it, each episode makes exactly one
firing event and one resolved event, and each event one delivery per destination.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from runs.models.billing import Budget
from runs.models.teams import Role, Team


class AlertKind(models.TextChoices):
    BUDGET_PERCENT = "budget_percent", "Budget reached a percentage"
    BUDGET_HARD = "budget_hard", "Hard budget hit"
    ERROR_RATE = "error_rate", "Error rate over a threshold"
    HOURLY_COST = "hourly_cost", "Cost in the last hour over an amount"


class AlertRule(models.Model):
    team = models.ForeignKey(Team, models.CASCADE, related_name="alert_rules")
    kind = models.CharField(max_length=20, choices=AlertKind.choices)
    # Budget rules: which budget, and (budget_percent) at what share of its limit.
    budget = models.ForeignKey(Budget, models.CASCADE, null=True, blank=True, related_name="+")
    percent = models.DecimalField(max_digits=6, decimal_places=2, null=True, blank=True)
    # Error-rate rules: one agent or all ("") over the last `window_minutes`, once at least
    # `min_runs` runs finished in the window (one failed run of one is not a rate).
    agent = models.CharField(max_length=200, blank=True)
    window_minutes = models.PositiveIntegerField(null=True, blank=True)
    min_runs = models.PositiveIntegerField(default=1)
    # Hourly-cost rules: dollars.
    amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    enabled = models.BooleanField(default=True)
    # The state the evaluator moves atomically: `episode` counts the times it began firing.
    firing = models.BooleanField(default=False)
    episode = models.PositiveIntegerField(default=0)
    last_value = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # The settings page: a team's rules in the order they were made.
            models.Index(fields=["team", "created_at"], name="alert_rule_team"),
        ]

    def __str__(self) -> str:
        return f"{self.team} {self.kind} #{self.pk}"


class DestinationKind(models.TextChoices):
    EMAIL = "email", "E-mail"
    WEBHOOK = "webhook", "Webhook"


class AlertDestination(models.Model):
    team = models.ForeignKey(Team, models.CASCADE, related_name="alert_destinations")
    kind = models.CharField(max_length=10, choices=DestinationKind.choices)
    name = models.CharField(max_length=100)
    # E-mail: the roles whose members receive it, comma-separated ("owner,admin").
    roles = models.CharField(max_length=100, blank=True)
    # Webhook: where to POST, and the signing secret, encrypted (runs.core.crypto): it must be
    # usable to sign, so it cannot be stored hashed. Shown once, when made.
    url = models.URLField(max_length=500, blank=True)
    secret_ciphertext = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.team} {self.kind} {self.name}"

    @property
    def role_list(self) -> list[str]:
        valid = set(Role.values)
        return [role for role in self.roles.split(",") if role in valid]


class AlertEvent(models.Model):
    """A rule began firing, or resolved: once per (rule, episode, state)."""

    FIRING = "firing"
    RESOLVED = "resolved"

    team = models.ForeignKey(Team, models.CASCADE, related_name="+")
    rule = models.ForeignKey(AlertRule, models.SET_NULL, null=True, related_name="events")
    episode = models.PositiveIntegerField()
    state = models.CharField(max_length=10)
    summary = models.CharField(max_length=300)
    value = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "episode", "state"], name="one_event_per_rule_episode_state"
            ),
        ]
        indexes = [
            # The alerts page: a team's events, newest first.
            models.Index(fields=["team", "-created_at"], name="alert_event_team_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.team} {self.state} {self.summary}"


class AlertDelivery(models.Model):
    """One event to one destination, retried with backoff until sent or out of attempts."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"

    event = models.ForeignKey(AlertEvent, models.CASCADE, related_name="deliveries")
    destination = models.ForeignKey(
        AlertDestination, models.SET_NULL, null=True, related_name="deliveries"
    )
    status = models.CharField(max_length=10, default=PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["event", "destination"], name="one_delivery_per_event_destination"
            ),
        ]
        indexes = [
            # The delivery loop: pending deliveries that are due.
            models.Index(fields=["status", "next_attempt_at"], name="alert_delivery_due"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.destination} {self.status}"


class AlertAttempt(models.Model):
    """One try at a delivery: what happened, for the alerts page."""

    delivery = models.ForeignKey(AlertDelivery, models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"{self.delivery} {'ok' if self.ok else 'failed'} {self.response_code or ''}"
