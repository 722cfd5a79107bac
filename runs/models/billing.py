"""What tokens cost a team (prices) and what it may spend (budgets and their alerts)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from runs.models.teams import GatewayToken, Team

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
    """A monthly spending limit for a team, or for one of its agents, members or gateway tokens.

    At most one scope is set: `agent`, `user` or `token`; none of them means the whole team.
    """

    team = models.ForeignKey(Team, models.CASCADE, related_name="budgets")
    agent = models.CharField(max_length=200, blank=True, help_text="Blank: the whole team")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.CASCADE, null=True, blank=True, related_name="+"
    )
    token = models.ForeignKey(
        GatewayToken, models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    monthly_limit = models.DecimalField(max_digits=14, decimal_places=2)
    warn_percent = models.PositiveSmallIntegerField(default=80)
    hard_stop = models.BooleanField(default=False)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # One budget per scope. NULLs are never equal in a unique constraint, so each kind
            # of scope has its own, limited to the rows of that kind.
            models.UniqueConstraint(
                fields=["team", "agent"],
                condition=models.Q(user__isnull=True, token__isnull=True),
                name="one_budget_per_scope",
            ),
            models.UniqueConstraint(
                fields=["team", "user"],
                condition=models.Q(user__isnull=False),
                name="one_budget_per_member",
            ),
            models.UniqueConstraint(
                fields=["team", "token"],
                condition=models.Q(token__isnull=False),
                name="one_budget_per_token",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(user__isnull=True, token__isnull=True)
                    | models.Q(agent="", user__isnull=False, token__isnull=True)
                    | models.Q(agent="", user__isnull=True, token__isnull=False)
                ),
                name="budget_has_one_scope",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.team} {self.scope_label} ${self.monthly_limit}/month"

    @property
    def scope_label(self) -> str:
        """The scope for people: "team", "agent X", "member X" or "token X"."""
        if self.user_id is not None:
            return f"member {self.user.get_username()}"
        if self.token_id is not None:
            return f"token {self.token.name} ({self.token.prefix}…)"
        return f"agent {self.agent}" if self.agent else "team"


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
