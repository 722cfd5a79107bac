"""Formatting for run history: costs that never turn "no price" into $0, tokens, durations.

The rules are runs.core.formatting's; these filters add the run's cost status.

Filters return plain strings, which templates escape like any other value.
"""

from __future__ import annotations

from decimal import Decimal

from django import template

from runs.core import formatting
from runs.models import CostStatus

register = template.Library()


def _dollars(amount: Decimal) -> str:
    return formatting.money(amount)


@register.filter
def run_cost(run) -> str:
    """A run's cost as recorded: "unpriced" when no price applied, never $0."""
    if run.cost is None:
        if run.cost_status == CostStatus.UNPRICED:
            return "unpriced"
        if run.cost_status == CostStatus.PENDING:
            return "pending"
        return "—"
    if run.cost_status == CostStatus.PARTIAL:
        return f"≥ {_dollars(run.cost)}"
    return _dollars(run.cost)


@register.filter
def dollars(amount: Decimal | None) -> str:
    return "unpriced" if amount is None else _dollars(amount)


@register.filter
def tokens(value) -> str:
    return formatting.token_count(value)


@register.filter
def ms(value) -> str:
    """Milliseconds in the one style of runs.core.formatting.duration."""
    return formatting.duration(value)
