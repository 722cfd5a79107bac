"""Usage and cost reports: the report page, its CSV, and the playground's cost estimate.

Every view reaches team data through runs.core.access; nothing is fetched by id alone. Pages
work without JavaScript; with htmx, the report form swaps just the report. Prices are in
runs.reports.prices, budgets in runs.reports.budget_views, `/api/usage` in runs.reports.api.
"""

from __future__ import annotations

import csv
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_GET

from runs.core.access import team_view
from runs.core.formatting import money_number
from runs.core.spreadsheet import csv_cell
from runs.core.validation import (
    MAX_TOKENS_RANGE,
    MAX_TURNS_RANGE,
    InvalidRequest,
    parse_query_int,
)
from runs.models import Team
from runs.pipeline.budgets import estimate_run, note_alerts, request_budget_statuses
from runs.pipeline.recording import storable
from runs.reports.charts import bar_chart, stacked_spend_chart
from runs.reports.comparison import period_change
from runs.reports.meta_report import InvalidGroup, check_group, group_choices, report_for
from runs.reports.queries import (
    PERIODS,
    InvalidPeriod,
    Report,
    make_period,
)
from runs.reports.table import rows_html

CSV_COLUMNS = (
    "key", "label", "runs", "completed", "failed", "inputTokens", "outputTokens",
    "cachedInputTokens", "reasoningTokens", "cost", "unpricedRuns", "partialRuns",
    "durationP50Ms", "durationP95Ms", "firstFrameP50Ms", "firstFrameP95Ms", "avgIterations",
    "maxTurnsHitShare",
)  # fmt: skip


def _report_from(request: HttpRequest, team: Team) -> tuple[Report | None, str, dict]:
    """The report the query string asks for, or (None, error) for a bad query."""
    query = {
        "period": request.GET.get("period", "") or ("custom" if request.GET.get("since") else ""),
        "since": request.GET.get("since", ""),
        "until": request.GET.get("until", ""),
        "group_by": request.GET.get("group_by", "") or "agent",
    }
    try:
        # A fixed grouping or meta:<key> for a key the team's runs carry (bounded, checked).
        check_group(team, query["group_by"][:200])
        period = make_period(
            query["period"] or "30d", query["since"], query["until"], zone=team.zone
        )
    except (InvalidGroup, InvalidPeriod) as problem:
        return None, str(problem), query
    query["period"] = period.key
    if period.key == "custom":
        query["since"], query["until"] = period.since.isoformat(), period.until.isoformat()
    return report_for(team, period, query["group_by"]), "", query


def _query_string(query: dict, **changes) -> str:
    merged = {**query, **changes}
    if merged.get("period") != "custom":
        merged.pop("since", None)
        merged.pop("until", None)
    return urlencode({name: value for name, value in merged.items() if value})


@require_GET
@team_view()
def reports(request: HttpRequest) -> HttpResponse:
    report, error, query = _report_from(request, request.team)
    groups = group_choices(request.team)
    context = {
        "report": report,
        "error": error,
        "query": query,
        "periods": PERIODS,
        "groups": groups,
        "export_query": _query_string(query),
        "period_links": {key: _query_string(query, period=key) for key in PERIODS},
        "group_links": {key: _query_string(query, group_by=key) for key in groups},
    }
    if report is not None:
        context["spend_chart"] = stacked_spend_chart(report.spend)
        context["change"] = period_change(request.team, report.period, report.totals)
        bars = [(row.label, row.cost) for row in report.rows if row.cost > 0][:15]
        context["group_chart"] = bar_chart(bars, label=f"Spend by {report.group_by}")
        context["run_list_url"] = reverse("run_list")
        context["table_rows"] = rows_html(report.rows, context["run_list_url"])
        context["budgets"] = _banner_statuses(request)
    status = 400 if error else 200
    template = "runs/reports/_report.html" if request.htmx else "runs/reports/reports.html"
    return render(request, template, context, status=status)


def _banner_statuses(request: HttpRequest):
    """Budgets at or past their warning threshold, for the banner (and their audit event)."""
    statuses = request_budget_statuses(request)
    note_alerts(request.team, statuses)
    return [status for status in statuses if status.level != "ok"]


@require_GET
@team_view()
def report_export(request: HttpRequest) -> HttpResponse:
    report, error, _query = _report_from(request, request.team)
    if report is None:
        return HttpResponse(error, status=400, content_type="text/plain; charset=utf-8")
    name = (
        f"rtdash-{request.team.slug}-by-{report.group_by}-"
        f"{report.period.since:%Y%m%d}-{report.period.until:%Y%m%d}.csv"
    )
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    for row in [*report.rows, report.totals]:
        values = row.as_dict()
        if row is report.totals:
            values["key"], values["label"] = "", "TOTAL"
        # The same rounding as the page (runs.core.formatting); the JSON API keeps it exact.
        values["cost"] = None if row.fully_unpriced else money_number(row.cost)
        writer.writerow([csv_cell(values[column]) for column in CSV_COLUMNS])
    return response


# --- Before a run ---------------------------------------------------------------------------


def _int_param(request: HttpRequest, name: str, bounds: tuple[int, int]) -> int | None:
    """The parameter as a bounded integer, None when absent. Raises InvalidRequest."""
    value = request.GET.get(name, "").strip()
    return parse_query_int(value, name, *bounds) if value else None


@require_GET
@team_view()
def run_estimate(request: HttpRequest) -> HttpResponse:
    """The estimate fragment for the playground: `?agent=&maxTurns=&maxTokens=`."""
    # As stored: a NUL (which PostgreSQL cannot compare) is U+FFFD in every stored agent.
    agent = storable(request.GET.get("agent", "").strip()[:200])
    try:
        config = {
            name: value
            for name, bounds in (("maxTurns", MAX_TURNS_RANGE), ("maxTokens", MAX_TOKENS_RANGE))
            if (value := _int_param(request, name, bounds)) is not None
        }
    except InvalidRequest as problem:
        # Same place in the page as the estimate, saying what to fix.
        fragment = '<div class="run-estimate" id="run-estimate"><p class="muted">{}</p></div>'
        return HttpResponse(format_html(fragment, problem.message), status=400)
    estimate = estimate_run(request.team, agent, config, user_id=request.user.pk) if agent else None
    return render(request, "runs/reports/_run_estimate.html", {"estimate": estimate})
