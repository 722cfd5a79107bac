"""Filters every page shares: moments in the viewer's time zone, enum values as words.

Money, durations and token counts have their filters in rtdash_history and rtdash_reports,
which both read runs.core.formatting, so the rules live in one place.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from runs.core import formatting

register = template.Library()


@register.filter
def when(moment: datetime | str | None, style: str = "minutes") -> SafeString | str:
    """A moment as <time>: the UTC text, which static/times.js rewrites to the viewer's time
    zone (keeping the UTC time on hover); without JavaScript the UTC text stays.

    `style` is "minutes", "seconds" or "date". An ISO 8601 string (as JSON answers and the
    upstream carry moments) is read first; one that is not a moment is shown as it is.
    """
    if moment is None or moment == "":
        return "—"
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return moment
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    if style == "date":
        return format_html(
            '<time datetime="{}" data-style="date" title="{}">{}</time>',
            formatting.utc_iso(moment),
            formatting.utc_text(moment),
            f"{moment.astimezone(UTC):%Y-%m-%d}",
        )
    seconds = style == "seconds"
    return format_html(
        '<time datetime="{}" data-style="{}" title="{}">{}</time>',
        formatting.utc_iso(moment),
        style,
        formatting.utc_text(moment, seconds=True),
        formatting.utc_text(moment, seconds=seconds),
    )


@register.filter
def label(value: str | None) -> str:
    """An identifier as words: "in_sandbox" reads "In sandbox"."""
    return formatting.enum_label(value)


@register.simple_tag
def times_note() -> SafeString:
    """Says which time zone the page's times are in; static/times.js updates it."""
    return format_html('<span class="times-note" data-times-note>{}</span>', "Times in UTC.")


@register.filter
def get_field_label(form, name: str) -> str:
    """A form field's label by name, for listing a form's errors."""
    field = form.fields.get(name)
    return str(field.label) if field is not None and field.label else name
