"""A database error raised outside any view — by a middleware on the way out, as a session
saved after the view would — answers 503 like a view's, through Django's 500 handler
(rtdash.unavailable.server_error); any other error still gets the 500 page."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.db import OperationalError
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db

REFUSED = 'connection to server at "127.0.0.1", port 5432 failed: Connection refused'


class FailsOnTheWayOut:
    """Raises `error` after the view has answered (the response phase of the stack)."""

    error: Exception = OperationalError(REFUSED)

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        self.get_response(request)
        raise type(self).error


class BugOnTheWayOut(FailsOnTheWayOut):
    error = ValueError("a bug, not an outage")


def _stack(middleware: type) -> list[str]:
    return [f"{__name__}.{middleware.__name__}", *settings.MIDDLEWARE]


@override_settings(DEBUG=False, MIDDLEWARE=_stack(FailsOnTheWayOut))
def test_a_database_error_outside_the_view_answers_503(caplog):
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.WARNING):
        page = client.get("/login/")
        second = client.get("/login/")
        api = client.get("/api/usage")
    assert page.status_code == second.status_code == 503
    assert page["Content-Type"].startswith("text/html")
    assert "Service unavailable" in page.content.decode()
    assert page["Retry-After"] == "5"
    assert api.status_code == 503
    assert api.json()["error"]["code"] == "unavailable"
    assert api["Retry-After"] == "5"
    # One line a request, rtdash's, naming the error; no traceback, and no second line from
    # Django for the same 503.
    lines = [r.getMessage() for r in caplog.records if r.name == "rtdash.unavailable"]
    assert lines == [
        f"Database unavailable: GET {path} answered 503 (OperationalError: {REFUSED})"
        for path in ("/login/", "/login/", "/api/usage")
    ]
    assert [r for r in caplog.records if r.name == "django.request"] == []
    assert not any(r.exc_info for r in caplog.records)


@override_settings(DEBUG=False, MIDDLEWARE=_stack(BugOnTheWayOut))
def test_any_other_error_outside_the_view_is_still_a_500(caplog):
    with caplog.at_level(logging.ERROR):
        page = Client(raise_request_exception=False).get("/login/")
    assert page.status_code == 500
    assert "Service unavailable" not in page.content.decode()
    # Django still reports it, traceback and all.
    [report] = [r for r in caplog.records if r.name == "django.request"]
    assert report.levelno == logging.ERROR and isinstance(report.exc_info[1], ValueError)
