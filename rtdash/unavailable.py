"""A database that cannot be reached answers 503, never a 500 page.

"Cannot be reached" covers PostgreSQL being down or refusing connections, and every pooled
connection of this worker staying busy past RTDASH_DB_POOL_TIMEOUT (psycopg_pool's
PoolTimeout, which Django raises as an OperationalError). SDKs parse the RunTools envelope, so
/v1/ and /api/ get it (code `unavailable`); pages get a plain 503 page. Each such request is
logged as one line naming the error, without a traceback: an outage would otherwise print one
per request. A view's error is caught by the middleware; an error raised outside any view
reaches `server_error`, Django's 500 handler. Either way the request's one line is rtdash's:
Django's own for the 503 is skipped.
"""

from __future__ import annotations

import logging
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin
from django.views import defaults

from rtdash.logs import RepeatedOutageErrors
from runs.core.errors import error_response

logger = logging.getLogger("rtdash.unavailable")

# Paths whose callers are programs that parse the RunTools error envelope.
API_PREFIXES = ("/v1/", "/api/")
RETRY_AFTER_SECONDS = 5
UNAVAILABLE_MESSAGE = "The database is unavailable; try again shortly."
UNAVAILABLE_PAGE = (
    "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
    "<title>Service unavailable</title></head><body><h1>Service unavailable</h1>"
    "<p>The database is unavailable. Try again in a few seconds.</p></body></html>"
)


def is_database_unavailable(error: BaseException) -> bool:
    # OperationalError: refused or lost connection, pool timeout, query cancelled, SQLite
    # "database is locked". InterfaceError: a connection that was already closed.
    return isinstance(error, OperationalError | InterfaceError)


def unavailable_response(request: HttpRequest) -> HttpResponse:
    if request.path.startswith(API_PREFIXES):
        response = error_response(503, "unavailable", UNAVAILABLE_MESSAGE)
    else:
        response = HttpResponse(UNAVAILABLE_PAGE, status=503, content_type="text/html")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def answer_database_unavailable(request: HttpRequest, error: Exception) -> HttpResponse | None:
    """A 503 for a database error, or None to let Django handle any other exception."""
    if not is_database_unavailable(error):
        return None
    reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
    logger.warning(
        "Database unavailable: %s %s answered 503 (%s: %s)",
        request.method,
        request.path,
        type(error.__cause__ or error).__name__,
        reason,
    )
    response = unavailable_response(request)
    # That line is the request's log: Django's own "Service Unavailable" line for it (with
    # the traceback, when the error escaped every view) would repeat it on every request.
    # django.utils.log.log_response skips a response marked so.
    response._has_been_logged = True
    return response


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """Turns a view's database-unavailable error into a 503 (see the module docstring)."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return answer_database_unavailable(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's 500 handler (`handler500` in rtdash.urls). The middleware above sees only a
    view's errors; a database error raised elsewhere (a middleware saving the session after
    the view, a response being rendered) reaches Django's last resort, which calls this inside
    its `except`, so the error is still at hand: it answers 503 like the rest, and anything
    else gets Django's own 500 page."""
    error = sys.exc_info()[1]
    if error is not None and is_database_unavailable(error):
        return answer_database_unavailable(request, error)
    return defaults.server_error(request)


class RepeatedDatabaseErrors(RepeatedOutageErrors):
    """The maintenance thread retries every few seconds while the database is unreachable."""

    what = "the database is unavailable"

    def is_outage(self, error: BaseException) -> bool:
        return is_database_unavailable(error)
