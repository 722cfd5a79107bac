"""`GET /api/usage`: a usage report as JSON, for a logged-in person or an rtdash token.

Errors use the RunTools envelope `{"error": {"code", "message"}}`, as the gateway does.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from runs.core.access import current_membership
from runs.gateway.views import GatewayError, _check_rate, _credential, error_response
from runs.models import GatewayToken, Team, hash_token
from runs.reports.views import _report_from


def _token_team(request: HttpRequest) -> Team | None:
    """The team of the rtdash token on the request; None when there is none.

    Uses the gateway's own credential parsing (X-API-Key or Authorization: Bearer) and rate
    limit. Unlike a gateway call, reading usage needs no RunTools key.
    """
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
def api_usage(request: HttpRequest) -> HttpResponse:
    """`GET /api/usage?group_by=&since=&until=`: a report as JSON, for a session or a token."""
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
        team = membership.team
    report, error, _query = _report_from(request, team)
    if report is None:
        return error_response(400, "bad_request", error)
    body = {"data": report.as_dict(), "meta": {"currency": "USD"}}
    return JsonResponse(body)
