"""The reconciliation page (owners and admins) and `GET /api/reconciliation` (a token or a
session of an owner or admin), both scoped to one team."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from runs.accounting.reconcile import PERIODS, InvalidPeriod, reconcile
from runs.core.access import TeamRequest, current_membership, team_view
from runs.gateway.views import GatewayError, _check_rate, _credential, error_response
from runs.models import GatewayToken, Team, hash_token


def _token_team(request: HttpRequest) -> Team | None:
    """The team of the rtdash token on the request (as /api/usage reads it); None without one."""
    plaintext = _credential(request)
    if not plaintext:
        return None
    token = (
        GatewayToken.objects.select_related("team").filter(token_hash=hash_token(plaintext)).first()
    )
    if token is None or not token.is_usable():
        raise GatewayError(401, "invalid_token", "The token is unknown, revoked or expired.")
    _check_rate(token)
    return token.team


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
        team = _token_team(request)
    except GatewayError as problem:
        response = error_response(problem.status, problem.code, problem.message)
        for name, value in problem.headers.items():
            response[name] = value
        return response
    if team is None:
        membership = current_membership(request)
        if membership is None:
            if request.user.is_authenticated:
                return error_response(404, "not_found", "You are not a member of any team.")
            return error_response(
                401, "unauthorized", "Log in, or send an rtdash token in X-API-Key."
            )
        if not membership.can_manage:
            return error_response(404, "not_found", "Not available to your role.")
        team = membership.team
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
