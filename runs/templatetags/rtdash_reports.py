"""Formatting for reports: money that never turns "unknown" into $0, tokens, milliseconds."""

from __future__ import annotations

from decimal import Decimal

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from runs.core import formatting
from runs.core.formatting import money as _money
from runs.models import CostStatus

register = template.Library()

# Constant markup, no data in it.
UNPRICED = mark_safe('<span class="unpriced" title="No price applies">unpriced</span>')
NOT_YET = mark_safe('<span class="muted">—</span>')


@register.filter
def money(amount: Decimal | None) -> str:
    """Dollars; None (no price) reads "unpriced", never $0."""
    return _money(amount)


@register.filter
def run_cost(run) -> SafeString:
    """A run's cost with its status: unpriced, a partial lower bound, or exact."""
    if run.cost_status == CostStatus.UNPRICED or (
        run.cost is None and run.cost_status != CostStatus.PENDING
    ):
        return UNPRICED
    if run.cost_status == CostStatus.PENDING or run.cost is None:
        return NOT_YET
    if run.cost_status == CostStatus.PARTIAL:
        return format_html(
            '<span class="partial" title="Some usage was not reported: at least this">≥ {}</span>',
            _money(run.cost),
        )
    return format_html("{}", _money(run.cost))


@register.filter
def group_cost(row) -> SafeString:
    """A report row's cost: "unpriced" when no run had a price, else the sum, with notes."""
    if row.fully_unpriced:
        return UNPRICED
    text = format_html("{}{}", "≥ " if row.partial_runs else "", _money(row.cost))
    notes = []
    if row.unpriced_runs:
        notes.append(f"+{row.unpriced_runs:,} unpriced")
    if row.partial_runs:
        notes.append(f"{row.partial_runs:,} partial")
    if notes:
        return format_html('{} <span class="note">({})</span>', text, ", ".join(notes))
    return text


@register.filter
def tokens(value) -> str:
    return formatting.token_count(value)


@register.filter
def ms(value) -> str:
    """Milliseconds in the one style of runs.core.formatting.duration."""
    return formatting.duration(value)


@register.filter
def percent(value) -> str:
    if value is None:
        return "—"
    return f"{float(value) * 100:.1f}%"


@register.filter
def change(value: float | None) -> SafeString:
    """A relative change against the previous period: "+12%", "-3%", or "new" from nothing."""
    if value is None:
        return mark_safe(
            '<span class="change muted" title="Nothing in the previous period">new</span>'
        )
    percent = value * 100
    if round(percent) == 0:
        return mark_safe('<span class="change same">±0%</span>')
    sign, direction = ("+", "up") if percent > 0 else ("-", "down")
    return format_html(
        '<span class="change {}">{}{}%</span>', direction, sign, f"{abs(percent):,.0f}"
    )


@register.filter
def decimal1(value) -> str:
    return "—" if value is None else f"{float(value):.1f}"


@register.filter
def get_item(mapping: dict, key):
    return mapping.get(key, "")


@register.filter
def urlencode_dict(mapping: dict) -> str:
    from urllib.parse import urlencode

    return urlencode(mapping)
