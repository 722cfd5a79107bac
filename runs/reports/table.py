"""The report table's body rows, written in Python.

A report can have a few hundred rows (a metadata key's values, the top threads) of fourteen
cells each; through the template engine every cell is a variable lookup, a filter call and an
autoescape, which cost more than building the report itself. Here each row is one format
string with every piece of text escaped (by the standard library's escape: Django's, made for
lazy strings, cost more than the rest of the row), and the cells use the same formatting as
the template's filters (runs.templatetags.rtdash_reports), so the page reads the same.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from django.utils.safestring import SafeString, mark_safe

from runs.core.formatting import duration, token_count
from runs.reports.queries import GroupRow
from runs.templatetags.rtdash_reports import decimal1, group_cost, percent

NUMBER_CELL = '<td class="num">{}</td>'


def _label_cell(row: GroupRow, run_list_url: str) -> str:
    if not run_list_url:
        return f"<td>{escape(row.label)}</td>"
    link = escape(f"{run_list_url}?{urlencode(row.filters)}")
    return f'<td><a href="{link}" title="The runs behind this row">{escape(row.label)}</a></td>'


def row_html(row: GroupRow, run_list_url: str) -> str:
    """One `<tr>` of the table: the label (a link to the row's runs), then the numbers."""
    cells = (
        token_count(row.runs), token_count(row.completed), token_count(row.failed),
        token_count(row.input_tokens), token_count(row.output_tokens),
        token_count(row.cached_input_tokens), token_count(row.reasoning_tokens),
        group_cost(row),  # already safe markup
        duration(row.duration_p50_ms), duration(row.duration_p95_ms),
        duration(row.first_frame_p50_ms), decimal1(row.avg_iterations),
        percent(row.max_turns_share),
    )  # fmt: skip
    numbers = "".join(
        NUMBER_CELL.format(cell if isinstance(cell, SafeString) else escape(cell)) for cell in cells
    )
    return f"<tr>{_label_cell(row, run_list_url)}{numbers}</tr>"


def rows_html(rows: list[GroupRow], run_list_url: str) -> SafeString:
    """The table's body rows, each escaped as it is built."""
    return mark_safe("\n".join(row_html(row, run_list_url) for row in rows))  # noqa: S308 - escaped above
