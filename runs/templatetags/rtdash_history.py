"""Formatting for run history: costs that never turn "no price" into $0, tokens, durations.

Filters return plain strings, which templates escape like any other value.
"""

from __future__ import annotations

from decimal import Decimal

from django import template

from runs.models import CostStatus

register = template.Library()


def _dollars(amount: Decimal) -> str:
    """Cents from a dollar up; below that, up to six decimals, since one run often costs a
    fraction of a cent and rounding it to $0.01 (or $0.00) would misstate it."""
    if abs(amount) >= 1 or amount == 0:
        return f"${amount:,.2f}"
    if abs(amount) < Decimal("0.000001"):
        return f"${amount.normalize():f}"
    whole, _, decimals = f"{amount:.6f}".partition(".")
    return f"${whole}.{decimals.rstrip('0').ljust(2, '0')}"


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
    return "—" if value is None else f"{int(value):,}"


@register.filter
def ms(value) -> str:
    """Milliseconds for people: 850 ms, 12.4 s, 3 min 5 s."""
    if value is None:
        return "—"
    value = float(value)
    if value < 1000:
        return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"
    if value < 60_000:
        return f"{value / 1000:.1f} s"
    minutes, seconds = divmod(round(value / 1000), 60)
    return f"{minutes} min {seconds} s"
