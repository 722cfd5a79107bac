"""Charts as inline SVG, drawn on the server: no JavaScript, no CDN, sharp in a screenshot.

Each chart is a function from numbers to markup. Text is escaped; every bar carries a <title>
(the browser's tooltip) with its exact amount, and the page shows the same numbers in a table.
"""

from __future__ import annotations

import math
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from runs.core.formatting import money
from runs.reports.queries import SpendSeries

# Colours come from the page's stylesheet (static/rtdash.css, `svg.chart …`), so a chart
# follows the light or dark theme; the parts are named by class, one class per series.
SERIES_COUNT = 7
FONT = 'class="chart-text"'


def _series(position: int) -> str:
    return f"series-{position % SERIES_COUNT}"


MAX_TICK_INTERVALS = 5


def nice_step(value: float, intervals: int = MAX_TICK_INTERVALS) -> float:
    """The smallest 1-2-5 step (…, 0.1, 0.2, 0.5, 1, 2, 5, 10, …) that covers `value` in at
    most `intervals` steps, so every tick lands on a round amount."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value / intervals))
    while True:
        for multiple in (1, 2, 5):
            step = multiple * 10.0**exponent
            if step * intervals >= value * (1 - 1e-12):
                return step
        exponent += 1


def _nice_ceiling(value: float) -> tuple[float, float]:
    """A round axis maximum at or above `value`, and the 1-2-5 step between its ticks."""
    if value <= 0:
        return 1.0, 0.25
    step = nice_step(value)
    intervals = max(1, math.ceil(value / step - 1e-9))
    return step * intervals, step


def dollars(value: float | Decimal, step: float | None = None) -> str:
    """A bar's amount, as every page writes money (runs.core.formatting.money)."""
    return money(value if isinstance(value, Decimal) else Decimal(str(value)))


def tick_label(value: float, step: float) -> str:
    """An axis amount with as many decimals as its step needs: $0.0005, $0.25, $20, $1,000."""
    places = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    if step < 1 and places < 2:
        places = 2
    return f"${value:,.{places}f}"


def stacked_spend_chart(series: SpendSeries, width: int = 960, height: int = 280) -> SafeString:
    """Spend per day, one bar per day stacked by agent, with a legend and a dollar axis."""
    left, right, top, bottom = 64, 12, 28, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [float(t) for t in series.day_totals()]
    ceiling, step = _nice_ceiling(max(totals, default=0))
    count = max(len(series.days), 1)
    slot = plot_w / count
    bar = max(1.0, slot * 0.72)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="Spend per day, stacked by agent" xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in range(round(ceiling / step) + 1):
        value = step * tick
        y = top + plot_h - plot_h * value / ceiling
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'class="chart-grid"/><text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
            f"{FONT}>{escape(tick_label(value, step))}</text>"
        )
    label_every = max(1, math.ceil(count / 12))
    # Per agent, once: its escaped name and its series' class (a 90-day period has 90 bars).
    stacked = [
        (series.cost[agent], escape(agent), _series(position))
        for position, agent in enumerate(series.agents)
    ]
    for index, day in enumerate(series.days):
        x = left + index * slot + (slot - bar) / 2
        y = top + plot_h
        # Every day of the period has its slot and its tooltip, a day without spend too.
        parts.append(f'<g class="day" data-day="{day:%Y-%m-%d}">')
        if totals[index] <= 0:
            parts.append(
                f'<rect class="empty-day" x="{x:.1f}" y="{y - 1:.1f}" width="{bar:.1f}" '
                f'height="1" fill="#d0d5dd"><title>{day:%Y-%m-%d}: no priced spend</title></rect>'
            )
        for costs, name, css_class in stacked:
            amount = costs[index]
            if amount <= 0:
                continue
            h = plot_h * float(amount) / ceiling
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{max(h, 0.5):.1f}" '
                f'class="{css_class}"><title>{name} on {day:%Y-%m-%d}: '
                f"{escape(dollars(amount, 0.001))}</title></rect>"
            )
        parts.append("</g>")
        if index % label_every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" '
                f"{FONT}>{day:%m-%d}</text>"
            )
    x = left
    for position, agent in enumerate(series.agents):
        parts.append(
            f'<rect x="{x}" y="6" width="12" height="12" class="{_series(position)}"/>'
            f'<text x="{x + 16}" y="16" {FONT}>{escape(agent)}</text>'
        )
        x += 28 + 7 * len(agent)
    if not any(totals):
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" '
            f"{FONT}>No priced spend in this period</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text part above is escaped


def bar_chart(
    bars: list[tuple[str, Decimal]], width: int = 960, label: str = "Spend by group"
) -> SafeString:
    """Horizontal bars, one per group, labelled with the group and its amount."""
    row_h, left, right = 24, 220, 110
    height = max(1, len(bars)) * row_h + 8
    plot_w = width - left - right
    largest = max((float(value) for _, value in bars), default=0) or 1.0
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for index, (name, value) in enumerate(bars):
        y = 4 + index * row_h
        w = plot_w * float(value) / largest
        shown = name if len(name) <= 32 else name[:31] + "…"
        parts.append(
            f'<text x="{left - 8}" y="{y + 16}" text-anchor="end" {FONT}>{escape(shown)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{max(w, 0.5):.1f}" height="{row_h - 8}" '
            f'class="{_series(0)}"><title>{escape(name)}: {escape(dollars(value, 0.001))}</title>'
            f'</rect><text x="{left + w + 6:.1f}" y="{y + 16}" {FONT}>'
            f"{escape(dollars(value, 0.001 if value < 1 else None))}</text>"
        )
    if not bars:
        parts.append(f'<text x="{left}" y="18" {FONT}>No priced spend in this period</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text part above is escaped
