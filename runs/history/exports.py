"""The runs list as a file: CSV or JSON lines, with the list's filters, streamed.

The CSV goes through runs.core.spreadsheet's escaper, so no cell can be read as a formula,
and through runs.core.formatting, so it reads like the pages: times in UTC to the second
("2026-01-31T14:05:09Z"), costs to the same significant digits as on screen, booleans as
true/false, measured milliseconds rounded to what they mean. JSON Lines keeps exact values.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from typing import Any

from django.db.models import QuerySet
from django.http import Http404, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from runs.core.access import TeamRequest, for_team, team_view
from runs.core.audit import record
from runs.core.formatting import csv_number, csv_value, money_number, utc_iso
from runs.core.spreadsheet import csv_cell
from runs.history.filters import NEWEST_FIRST, RunFilterForm
from runs.models import Run

EXPORT_CHUNK = 2000

EXPORT_COLUMNS = [
    "id",
    "started_at",
    "finished_at",
    "agent",
    "status",
    "source",
    "user",
    "token",
    "thread",
    "upstream_run_id",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost",
    "cost_status",
    "duration_ms",
    "first_byte_ms",
    "overhead_ms",
    "iterations",
    "error_code",
    "error_message",
    "prompt",
    "result",
    "metadata",
    "synthetic",
]


def export_record(run: Run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "agent": run.agent,
        "status": run.status,
        "source": run.source,
        "user": run.user.get_username() if run.user else None,
        "token": run.token.name if run.token else None,
        "thread": run.upstream_thread_id or None,
        "upstream_run_id": run.upstream_run_id or None,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cached_input_tokens": run.cached_input_tokens,
        "reasoning_tokens": run.reasoning_tokens,
        "total_tokens": run.total_tokens,
        # A string keeps the exact decimal; None (not 0) when the run has no price.
        "cost": str(run.cost) if run.cost is not None else None,
        "cost_status": run.cost_status,
        "duration_ms": run.duration_ms,
        "first_byte_ms": run.first_byte_ms,
        "overhead_ms": run.overhead_ms,
        "iterations": run.iterations,
        "error_code": run.error_code or None,
        "error_message": run.error_message or None,
        "prompt": run.prompt,
        "messages": run.messages,
        "result": run.result,
        "config": run.config,
        "metadata": run.metadata,
        "synthetic": run.synthetic,
    }


def csv_record(run: Run) -> dict[str, Any]:
    """The export record as a spreadsheet shows it (see the module's docstring)."""
    row = export_record(run)
    row["started_at"] = utc_iso(run.started_at)
    row["finished_at"] = utc_iso(run.finished_at) or None
    row["cost"] = money_number(run.cost) or None
    row["overhead_ms"] = csv_number(run.overhead_ms, 1)
    return {name: csv_value(value) for name, value in row.items()}


class _Line:
    """csv.writer's file: hands back each written line instead of storing it."""

    def write(self, value: str) -> str:
        return value


async def _csv_lines(runs: QuerySet[Run]) -> AsyncIterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(EXPORT_COLUMNS)
    lines = []
    async for run in runs.aiterator(chunk_size=EXPORT_CHUNK):
        row = csv_record(run)
        lines.append(writer.writerow([csv_cell(row[name]) for name in EXPORT_COLUMNS]))
        if len(lines) >= 500:
            yield "".join(lines)
            lines = []
    if lines:
        yield "".join(lines)


async def _json_lines(runs: QuerySet[Run]) -> AsyncIterator[str]:
    lines = []
    async for run in runs.aiterator(chunk_size=EXPORT_CHUNK):
        lines.append(json.dumps(export_record(run), ensure_ascii=False) + "\n")
        if len(lines) >= 500:
            yield "".join(lines)
            lines = []
    if lines:
        yield "".join(lines)


EXPORTS = {
    "csv": (_csv_lines, "text/csv; charset=utf-8"),
    "jsonl": (_json_lines, "application/x-ndjson; charset=utf-8"),
}


@require_GET
@team_view()
def run_export(request: TeamRequest, fmt: str) -> StreamingHttpResponse:
    """The filtered runs, newest first, streamed: rows are read in chunks as they are sent.

    The body is an async iterator over `aiterator()`: under ASGI (daphne) Django would read a
    synchronous iterator to its end before sending a byte, holding the whole export in memory.
    """
    if fmt not in EXPORTS:
        raise Http404("No such export format")
    lines, content_type = EXPORTS[fmt]
    filters = RunFilterForm(request.GET, team=request.team).filters()
    runs = (
        filters.apply(for_team(Run, request.team))
        .select_related("user", "token")
        .order_by(*NEWEST_FIRST)
    )
    record(request, "runs_exported", request.team, target=f"{fmt}: {filters.query_string()}")
    response = StreamingHttpResponse(lines(runs), content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    filename = f"runs-{request.team.slug}-{stamp}.{fmt}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response
