"""The reconciliation page (owners and admins) and `GET /api/reconciliation` (a token or a
session of an owner or admin), both scoped to one team."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from runs.accounting.reconcile import PERIODS, InvalidPeriod, reconcile
from runs.core.access import TeamRequest, team_view
from runs.core.errors import GatewayError, error_response, refused_response
from runs.gateway.auth import api_caller


@require_GET
@team_view(manage=True)
def reconciliation(request: TeamRequest) -> HttpResponse:
    period = request.GET.get("period") or "current"
    if period not in PERIODS:
        context = {"periods": PERIODS, "period": period, "error": "Choose one of the periods."}
        return render(request, "runs/accounting/reconciliation.html", context, status=400)
    result = reconcile(request.team, period)
    context = {"periods": PERIODS, "period": period, "r": result}
    return render(request, "runs/accounting/reconciliation.html", context)


@require_GET
def api_reconciliation(request: HttpRequest) -> HttpResponse:
    """`GET /api/reconciliation?period=current|7d|30d`. RunTools' usage being unavailable is
    a 502 in the error envelope, in plain words; other upstream failures are listed in
    `problems` beside what could be read."""
    try:
        caller = api_caller(request)
    except GatewayError as problem:
        return refused_response(problem)
    if caller.membership is not None and not caller.membership.can_manage:
        return error_response(404, "not_found", "Not available to your role.")
    team = caller.team
    try:
        result = reconcile(team, request.GET.get("period") or "current")
    except InvalidPeriod as problem:
        return error_response(400, "bad_request", str(problem))
    if result.upstream is None:
        first = next((p for p in result.problems if p.what in ("usage", "key")), None)
        message = first.message if first else "RunTools' usage could not be read."
        return error_response(
            502,
            f"runtools_{first.code if first else 'unavailable'}",
            message,
            partial=result.as_dict(),
        )
    return JsonResponse({"data": result.as_dict(), "meta": {"currency": "USD"}})
