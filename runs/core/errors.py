"""Errors in RunTools' own envelope, for the gateway and rtdash's JSON API.

`{"error": {"code", "message", "requestId"}}`: SDKs written for RunTools handle rtdash's
refusals exactly as they handle upstream's.
"""

from __future__ import annotations

import secrets

from django.http import JsonResponse


class GatewayError(Exception):
    """A refusal with its HTTP status, RunTools error code and any headers (Retry-After)."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, **extra) -> JsonResponse:
    """An error in RunTools' own envelope, so SDKs handle rtdash's errors like upstream's."""
    body = {"error": {"code": code, "message": message, "requestId": _request_id(), **extra}}
    return JsonResponse(body, status=status)


def refused_response(problem: GatewayError) -> JsonResponse:
    """The envelope for a refusal, with its headers."""
    response = error_response(problem.status, problem.code, problem.message)
    for name, value in problem.headers.items():
        response[name] = value
    return response


def _request_id() -> str:
    return "req_rtd_" + secrets.token_hex(8)
