"""Budgets: whether a team may start another run, and what the next run is likely to cost.

Called by the shared prepare step (runs.pipeline.start) before any run is created — gateway,
playground and experiments alike — so a hard stop is enforced in one place with one error. A
budget covers the whole team, one agent, one member (the runs they start in the playground and
experiments) or one gateway token (the runs made with it). A budget is a calendar month of spend
in the team's time zone (its months begin at the team's midnight): the sum of the month's run
costs in the DailyUsage rollup, whose days are the team's and which keeps agent, user and token
on every row. Partial costs count what is known of them; unpriced runs cannot count
(their cost is unknown), which the budgets page says next to each budget.
"""

from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from runs.core.days import local_day, local_today
from runs.models import (
    Budget,
    BudgetAlert,
    CostStatus,
    DailyUsage,
    Price,
    Run,
    RunStatus,
    Team,
)
from runs.pipeline.pricing import Usage, cost_of, price_in_force

# The typical cost of a run is the median of the agent's latest runs with a computed cost.
TYPICAL_SAMPLE = 20

WARNING, EXCEEDED = "warning", "exceeded"


class BudgetExceeded(Exception):
    """A hard-stop budget is used up. The message names the budget and the amount."""

    code = "budget_exceeded"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def month_start(now: datetime | date | None = None, zone: tzinfo = UTC) -> date:
    """The first day of the month `now` falls in, in `zone` (a date is taken as it is)."""
    now = now or timezone.now()
    day = local_day(now, zone) if isinstance(now, datetime) else now
    return day.replace(day=1)


def money(amount: Decimal | None) -> str:
    """Dollars for people: cents, up to four decimals under a dollar, every digit under
    $0.0001 (simulated runs cost fractions of a cent, and $0.00 would read as free)."""
    if amount is None:
        return "unpriced"
    if amount != 0 and abs(amount) < Decimal("0.0001"):
        return f"${amount.normalize():f}"
    if amount != 0 and abs(amount) < 1:
        return (
            f"${amount:.4f}".rstrip("0").rstrip(".")
            if amount % Decimal("0.01")
            else (f"${amount:.2f}")
        )
    return f"${amount:,.2f}"


@dataclass
class BudgetStatus:
    budget: Budget
    month: date
    spent: Decimal
    unpriced_runs: int = 0

    @property
    def limit(self) -> Decimal:
        return self.budget.monthly_limit

    @property
    def remaining(self) -> Decimal:
        return max(Decimal(0), self.limit - self.spent)

    @property
    def percent(self) -> float:
        return float(self.spent / self.limit * 100) if self.limit else 100.0

    @property
    def level(self) -> str:
        """ "exceeded" at or past the limit, "warning" at or past the threshold, else "ok"."""
        if self.spent >= self.limit:
            return EXCEEDED
        if self.percent >= self.budget.warn_percent:
            return WARNING
        return "ok"

    @property
    def name(self) -> str:
        scope = self.budget.scope_label
        if scope == "team":
            return "the team's monthly budget"
        return f"the monthly budget for {scope}"

    def describe(self) -> str:
        """One sentence naming the budget and the amounts, for banners, errors and the log."""
        month = f"{self.month:%B %Y}"
        used = f"{money(self.spent)} of {money(self.limit)} spent in {month}"
        # Only the first letter: str.capitalize() would lower-case an agent's or token's name.
        name = self.name[:1].upper() + self.name[1:]
        if self.level == EXCEEDED:
            return f"{name} is used up: {used}."
        return f"{name} is at {self.percent:.0f}%: {used}."


def month_spend(
    team: Team,
    agent: str = "",
    month: date | None = None,
    *,
    user_id: int | None = None,
    token_id: int | None = None,
) -> tuple[Decimal, int]:
    """(cost, unpriced runs) of `team` (or one agent, member or token) in the month starting
    `month`."""
    month = month or month_start(zone=team.zone)
    rows = DailyUsage.objects.filter(team=team, day__gte=month)
    next_month = (month.replace(day=28) + (date.resolution * 4)).replace(day=1)
    rows = rows.filter(day__lt=next_month)
    if agent:
        rows = rows.filter(agent=agent)
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    if token_id is not None:
        rows = rows.filter(token_id=token_id)
    totals = rows.aggregate(cost=Sum("cost"), unpriced=Sum("unpriced_runs"))
    return totals["cost"] or Decimal(0), totals["unpriced"] or 0


def budget_statuses(
    team: Team,
    *,
    agent: str | None = None,
    user_id: int | None = None,
    token_id: int | None = None,
    now=None,
) -> list[BudgetStatus]:
    """This month's status of the team's budgets: all of them, or (given `agent`) those that
    govern a run of that agent started by `user_id` or with `token_id`."""
    # With its team: the gateway's Team is only an id, and the month is the team's own.
    budgets = Budget.objects.filter(team=team).select_related("team", "user", "token")
    if agent is not None:
        governs = Q(user__isnull=True, token__isnull=True, agent__in=["", agent])
        if user_id is not None:
            governs |= Q(user_id=user_id)
        if token_id is not None:
            governs |= Q(token_id=token_id)
        budgets = budgets.filter(governs)
    budgets = list(budgets)
    if not budgets:
        return []
    month = month_start(now, budgets[0].team.zone)
    statuses = []
    for budget in sorted(budgets, key=_scope_order):
        spent, unpriced = month_spend(
            team, budget.agent, month, user_id=budget.user_id, token_id=budget.token_id
        )
        statuses.append(BudgetStatus(budget, month, spent, unpriced))
    return statuses


def _scope_order(budget: Budget) -> tuple[int, str]:
    """The team first, then agents, members and tokens, each by name."""
    if budget.user_id is not None:
        return 2, budget.user.get_username()
    if budget.token_id is not None:
        return 3, budget.token.name
    return (1, budget.agent) if budget.agent else (0, "")


def note_alerts(team: Team, statuses: list[BudgetStatus]) -> None:
    """Write the audit event for a budget crossing its threshold or limit, once a month each."""
    from runs.core.audit import record

    crossed = [status for status in statuses if status.level != "ok"]
    if not crossed:
        return
    # Read first: once noted, a budget stays noted all month, and every page that shows the
    # banner calls this; an INSERT refused by the unique constraint costs a write transaction.
    noted = set(
        BudgetAlert.objects.filter(
            budget__in=[status.budget for status in crossed],
            month__in={status.month for status in crossed},
        ).values_list("budget_id", "month", "level")
    )
    for status in crossed:
        levels = [WARNING] if status.level == WARNING else [WARNING, EXCEEDED]
        for level in levels:
            if (status.budget.pk, status.month, level) in noted:
                continue
            try:
                with transaction.atomic():
                    BudgetAlert.objects.create(
                        budget=status.budget, month=status.month, level=level
                    )
            except IntegrityError:
                continue  # already noted this month
            action = "budget_warning" if level == WARNING else "budget_exceeded"
            # rtdash noticed it, whoever happened to be looking: a system event, no actor.
            record(None, action, team, target=status.describe(), actor_label="rtdash")


def enforce_budget(
    team: Team, agent: str, *, user_id: int | None = None, token_id: int | None = None
) -> None:
    """Raise BudgetExceeded when a hard-stop budget that governs the run is used up: the
    team's, its agent's, its member's (`user_id`) or its gateway token's (`token_id`). The
    check `admitting` makes before a run is recorded, with nothing recorded."""
    with admitting(team, agent, user_id=user_id, token_id=token_id):
        pass


def _refuse_past_hard_stops(team: Team, statuses: list[BudgetStatus]) -> None:
    """BudgetExceeded for the first hard stop used up. Runs still running under it count at
    their agent's typical cost, so a burst of runs started together is refused where the same
    runs one after another would be."""
    for status in statuses:
        if not status.budget.hard_stop:
            continue
        if status.level == EXCEEDED:
            raise BudgetExceeded(
                f"{status.describe()} New runs are refused until next month or until an owner "
                "raises the budget."
            )
        running, expected = in_flight(team, status.budget)
        if running and status.spent + expected >= status.limit:
            raise BudgetExceeded(
                f"{status.describe()} {running} run{'s' if running > 1 else ''} still running "
                f"under it {'are' if running > 1 else 'is'} expected to cost {money(expected)}, "
                "which would use it up: a new run is refused until they end or an owner raises "
                "the budget."
            )


@contextlib.contextmanager
def admitting(team: Team, agent: str, *, user_id: int | None = None, token_id: int | None = None):
    """Check the budgets that govern a run and hold them while its record is written.

    Inside a transaction that holds the team's hard-stop budgets' rows (SQLite's transactions
    take the database's write lock at their start, rtdash.settings), the check runs, then the
    caller records the run (status `running`) before the transaction ends: two runs started at
    once are checked one after the other, the second seeing the first in flight. Raises
    BudgetExceeded, before anything is recorded. The budgets' alerts are noted after the
    transaction, whether the run was admitted or refused: a refusal must not roll them back.
    """
    statuses: list[BudgetStatus] = []
    try:
        with transaction.atomic():
            # Locked until the run is recorded, always in the same order; NO KEY UPDATE, so an
            # alert being written for a budget (a foreign key to it) does not wait on this.
            hard = Budget.objects.filter(team=team, hard_stop=True).order_by("pk")
            list(hard.select_for_update(no_key=True).values_list("pk", flat=True))
            statuses = budget_statuses(team, agent=agent, user_id=user_id, token_id=token_id)
            _refuse_past_hard_stops(team, statuses)
            yield
    except BudgetExceeded:
        note_alerts(team, statuses)
        raise
    note_alerts(team, statuses)


def _recent_costs(team: Team, agent: str) -> list[Decimal]:
    """The agent's latest computed costs, at most TYPICAL_SAMPLE of them."""
    return list(
        Run.objects.filter(team=team, agent=agent, cost_status=CostStatus.COMPUTED)
        .order_by("-started_at")
        .values_list("cost", flat=True)[:TYPICAL_SAMPLE]
    )


def typical_cost(team: Team, agent: str) -> Decimal | None:
    """The median of the agent's latest computed costs; None without any."""
    recent = _recent_costs(team, agent)
    return statistics.median(recent) if recent else None


def in_flight(team: Team, budget: Budget) -> tuple[int, Decimal]:
    """The runs still running under `budget` and what they are expected to cost: each at its
    agent's typical cost (nothing for an agent with no priced run yet: unknown)."""
    running = Run.objects.filter(team=team, status=RunStatus.RUNNING)
    if budget.agent:
        running = running.filter(agent=budget.agent)
    if budget.user_id is not None:
        running = running.filter(user_id=budget.user_id)
    if budget.token_id is not None:
        running = running.filter(token_id=budget.token_id)
    count, expected = 0, Decimal(0)
    for agent, runs in running.values_list("agent").annotate(n=Count("pk")).order_by():
        count += runs
        expected += (typical_cost(team, agent) or 0) * runs
    return count, expected


# --- Before a run: what it is likely to cost ----------------------------------------------


@dataclass
class RunEstimate:
    """What the playground shows before a run (see templates/runs/reports/_run_estimate.html)."""

    agent: str
    price: Price | None
    typical: Decimal | None = None  # median of the latest computed costs
    typical_sample: int = 0
    worst: Decimal | None = None  # None: unbounded (no maxTurns or maxTokens) or unpriced
    worst_note: str = ""
    budgets: list[BudgetStatus] = field(default_factory=list)

    @property
    def remaining(self) -> Decimal | None:
        """What is left of the tightest budget that governs this agent; None without one."""
        if not self.budgets:
            return None
        return min(status.remaining for status in self.budgets)

    @property
    def worst_exceeds_remaining(self) -> bool:
        remaining = self.remaining
        return self.worst is not None and remaining is not None and self.worst > remaining


def _positive_int(config: dict, name: str) -> int | None:
    value = config.get(name) if isinstance(config, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def estimate_run(
    team: Team, agent: str, config: dict | None = None, *, user_id: int | None = None
) -> RunEstimate:
    """The agent's typical cost, its worst case under `config`, and what budgets leave.

    Worst case: every one of `maxTurns` turns writes `maxTokens` output tokens, and input and
    reasoning are as large as the largest of the agent's latest runs, all at today's prices
    with no cache discount. Without `maxTurns` and `maxTokens` a run has no ceiling, and the
    estimate says so rather than guessing.
    """
    config = config or {}
    price = price_in_force(team.pk, agent, local_today(team.zone))
    estimate = RunEstimate(agent=agent, price=price)
    recent = _recent_costs(team, agent)
    if recent:
        estimate.typical = statistics.median(recent)
        estimate.typical_sample = len(recent)
    max_turns, max_tokens = _positive_int(config, "maxTurns"), _positive_int(config, "maxTokens")
    if price is None:
        estimate.worst_note = "No price applies to this agent, so its cost is unknown."
    elif max_turns is None or max_tokens is None:
        estimate.worst_note = "Without maxTurns and maxTokens a run's cost has no ceiling."
    else:
        largest = Run.objects.filter(team=team, agent=agent).order_by("-started_at")[
            :TYPICAL_SAMPLE
        ]
        seen = Run.objects.filter(pk__in=largest.values("pk")).aggregate(
            input=Max("input_tokens"), reasoning=Max("reasoning_tokens")
        )
        usage = Usage(
            input_tokens=seen["input"] or 0,
            output_tokens=max_turns * max_tokens,
            reasoning_tokens=seen["reasoning"] or 0,
        )
        estimate.worst, _status = cost_of(usage, price)
        estimate.worst_note = (
            f"{max_turns} turns x {max_tokens:,} output tokens, plus the largest input and "
            "reasoning of recent runs."
        )
    estimate.budgets = budget_statuses(team, agent=agent, user_id=user_id)
    return estimate


def request_budget_statuses(request) -> list[BudgetStatus]:
    """The statuses of the request's team's budgets, read once per request: the page that
    shows them and the layout's banner (banner_context) share them."""
    statuses = getattr(request, "budget_statuses", None)
    if statuses is None:
        statuses = request.budget_statuses = budget_statuses(request.membership.team)
    return statuses


def banner_context(request) -> dict:
    """Context processor for the layout: the current team's budgets at or past their warning.

    Read-only (the audit event is written where budgets are enforced and on the reports pages).
    With it installed, base.html shows the banner on every page, and the pages that include the
    banner themselves leave it to the layout (`budget_banner_in_layout`).
    """
    if getattr(request, "membership", None) is None:
        return {}
    statuses = request_budget_statuses(request)
    return {
        "budget_banners": [status for status in statuses if status.level != "ok"],
        "budget_banner_in_layout": True,
    }
