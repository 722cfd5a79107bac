"""The home page's numbers: this month's spend, today's and this week's activity, the agents
and threads that cost the most, and the latest runs. Sums come from the daily rollup, whose
days are the team's (runs.core.days)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from django.db.models import Count, Sum

from runs.core.days import local_today
from runs.models import FINISHED_STATUSES, DailyUsage, Run, Team, Thread
from runs.reports.queries import Period, top_threads


@dataclass
class Activity:
    """Runs and failures in a span of days, from the rollup."""

    since: date
    until: date
    runs: int = 0
    failed: int = 0
    cost: Decimal = field(default_factory=Decimal)
    unpriced_runs: int = 0

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.runs if self.runs else None


def activity(team: Team, since: date, until: date) -> Activity:
    totals = DailyUsage.objects.filter(team=team, day__gte=since, day__lte=until).aggregate(
        runs=Sum("runs"), failed=Sum("failed"), cost=Sum("cost"), unpriced=Sum("unpriced_runs")
    )
    return Activity(
        since,
        until,
        totals["runs"] or 0,
        totals["failed"] or 0,
        totals["cost"] or Decimal(0),
        totals["unpriced"] or 0,
    )


@dataclass
class ThreadSpend:
    thread: Thread
    runs: int
    cost: Decimal | None


def expensive_threads(team: Team, period: Period, limit: int = 5) -> list[ThreadSpend]:
    """The threads whose runs in `period` cost the most (and cost something)."""
    ranked = [(pk, cost) for pk, cost in top_threads(team, period, limit)[0] if cost > 0]
    threads = Thread.objects.filter(team=team, pk__in=[pk for pk, _cost in ranked])
    counts = dict(
        Run.objects.filter(
            thread_id__in=[pk for pk, _cost in ranked],
            status__in=FINISHED_STATUSES,
            started_at__gte=period.start,
            started_at__lt=period.end,
        )
        .values("thread_id")
        .annotate(n=Count("pk"))
        .values_list("thread_id", "n")
        .order_by()
    )
    by_pk = {thread.pk: thread for thread in threads}
    return [ThreadSpend(by_pk[pk], counts.get(pk, 0), cost) for pk, cost in ranked if pk in by_pk]


def latest_runs(team: Team, limit: int = 10) -> list[Run]:
    return list(
        Run.objects.filter(team=team)
        .order_by("-started_at", "-id")
        .only(
            "pk", "agent", "status", "started_at", "duration_ms", "cost", "cost_status",
            "source", "user_id", "token_id", "team_id",
        )[:limit]
    )  # fmt: skip


@dataclass
class AgentSpend:
    agent: str
    runs: int
    cost: Decimal
    unpriced_runs: int


@dataclass
class Overview:
    """The home page: this month's spend, today's and this week's activity, the top spenders."""

    month: Activity
    today: Activity
    week: Activity
    top_agents: list[AgentSpend]
    threads: list[ThreadSpend]
    runs: list[Run]


def overview(team: Team, today: date | None = None) -> Overview:
    """The home page of `team`; today, this week and this month are the team's own (its time
    zone), as its rollup's days are."""
    zone = team.zone
    today = today or local_today(zone)
    month_start = today.replace(day=1)
    agents = (
        DailyUsage.objects.filter(team=team, day__gte=month_start, day__lte=today)
        .values("agent")
        .annotate(n=Sum("runs"), total=Sum("cost"), unpriced=Sum("unpriced_runs"))
        .order_by("-total", "agent")[:5]
    )
    return Overview(
        month=activity(team, month_start, today),
        today=activity(team, today, today),
        week=activity(team, today - timedelta(days=today.weekday()), today),
        top_agents=[AgentSpend(a["agent"], a["n"], a["total"], a["unpriced"]) for a in agents],
        threads=expensive_threads(team, Period("month", month_start, today, zone)),
        runs=latest_runs(team),
    )
