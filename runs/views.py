"""Pages for people. Team data is always reached through runs.core.access."""

from __future__ import annotations

import asyncio

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from runs import health
from runs.core.access import team_view
from runs.history.threads import page_url as thread_page_url
from runs.pipeline.budgets import note_alerts, request_budget_statuses
from runs.reports.overview import overview as overview_data


@require_GET
@team_view()
def overview(request: HttpRequest) -> HttpResponse:
    """The team at a glance; every number links to the report or list behind it."""
    team = request.team
    data = overview_data(team)
    statuses = request_budget_statuses(request)
    note_alerts(team, statuses)
    today = data.today.until.isoformat()
    context = {
        "data": data,
        "team_budget": next((s for s in statuses if not s.budget.agent), None),
        "budgets": [s for s in statuses if s.level != "ok"],
        "today": today,
        "week_since": data.week.since.isoformat(),
        "month_since": data.month.since.isoformat(),
        "run_list_url": reverse("run_list"),
        "run_links": [(run, reverse("run_detail", args=[run.pk])) for run in data.runs],
        "thread_links": [(row, thread_page_url(row.thread.upstream_id)) for row in data.threads],
    }
    return render(request, "runs/overview.html", context)


@require_GET
async def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. No database, no channel layer, no upstream, so that a
    restart is never ordered because a dependency is down (that is what /readyz is for)."""
    return JsonResponse({"ok": True})


@require_GET
async def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness for load balancers: whether this worker can serve (database, channel layer,
    upstream reachable). Says what is down, never any configuration or data."""
    database, layer, reachable = await asyncio.gather(
        sync_to_async(health.database_ok)(), health.channel_layer_ok(), health.upstream_ok()
    )
    checks = {"database": database, "channelLayer": layer, "upstream": reachable}
    status = 200 if all(checks.values()) else 503
    return JsonResponse({"ok": status == 200, "checks": checks}, status=status)
