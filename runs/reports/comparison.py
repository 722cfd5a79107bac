"""A report period against the previous period of the same length: spend, runs, tokens and
failures, and how each changed. The previous period's totals are one aggregate over its days
in the daily rollup, whatever the number of runs."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Sum

from runs.models import DailyUsage, Team
from runs.reports.queries import GroupRow, Period


@dataclass
class PeriodChange:
    """A period's totals against the previous period of the same length."""

    previous: Period
    cost: Decimal
    runs: int
    failed: int
    tokens: int
    unpriced_runs: int
    current: GroupRow

    @staticmethod
    def _change(now: float, before: float) -> float | None:
        """The relative change; None when the previous period had nothing to compare with."""
        return None if not before else (now - before) / before

    @property
    def cost_change(self) -> float | None:
        return self._change(float(self.current.cost), float(self.cost))

    @property
    def runs_change(self) -> float | None:
        return self._change(self.current.runs, self.runs)

    @property
    def tokens_change(self) -> float | None:
        current = self.current.input_tokens + self.current.output_tokens
        return self._change(current, self.tokens)

    @property
    def failed_change(self) -> float | None:
        return self._change(self.current.failed, self.failed)


def period_change(team: Team, period: Period, current: GroupRow) -> PeriodChange:
    """`current` (a report's totals) against the previous period, read from DailyUsage: one
    aggregate over the previous period's days, whatever the number of runs."""
    previous = period.previous
    sums = DailyUsage.objects.filter(
        team=team,
        day__gte=previous.since,
        day__lte=previous.until,
    ).aggregate(
        cost=Sum("cost"),
        runs=Sum("runs"),
        failed=Sum("failed"),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        unpriced_runs=Sum("unpriced_runs"),
    )
    return PeriodChange(
        previous=previous,
        cost=sums["cost"] or Decimal(0),
        runs=sums["runs"] or 0,
        failed=sums["failed"] or 0,
        tokens=(sums["input_tokens"] or 0) + (sums["output_tokens"] or 0),
        unpriced_runs=sums["unpriced_runs"] or 0,
        current=current,
    )
