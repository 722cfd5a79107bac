"""What a run cost. Prices are the team's own configuration (RunTools publishes none)."""

from __future__ import annotations

from decimal import Decimal

from runs.models import CostStatus, Run


def price_run(run: Run) -> tuple[Decimal | None, str]:
    """Return (cost, cost status) for a finished run, with the price in force at its start.

    Unpriced usage is never reported as zero: with no price, cost is None and the status says
    "unpriced".
    """
    return None, CostStatus.UNPRICED
