"""`GET /api/usage`: a usage report as JSON, for a logged-in person or an rtdash token.

Errors use the RunTools envelope `{"error": {"code", "message"}}`, as the gateway does.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from runs.core.errors import GatewayError, error_response, refused_response
from runs.gateway.auth import api_caller
from runs.reports.views import _report_from


@require_GET
def api_usage(request: HttpRequest) -> HttpResponse:
    """`GET /api/usage?group_by=&since=&until=`: a report as JSON, for a session or a token."""
    try:
        team = api_caller(request).team
    except GatewayError as problem:
        return refused_response(problem)
    report, error, _query = _report_from(request, team)
    if report is None:
        return error_response(400, "bad_request", error)
    body = {"data": report.as_dict(), "meta": {"currency": "USD"}}
    return JsonResponse(body)
