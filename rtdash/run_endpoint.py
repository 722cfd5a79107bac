"""The run endpoints (POST /v1/run and /v1/agents/{slug}/run) served with the least of
Django's request cycle: the gateway's hottest path, measured against a bare ASGI hop
(issue 18, docs/performance.md).

The view code is the one Django's handler runs (runs.gateway.views.answer_run), with the same
request and response classes, the same protections (rtdash.gateway_handler's Host check and
SecurityMiddleware hooks), the same 503 for an unreachable database, the same logging of
refusals and the same pair of request signals. What is left out is what a run does not need:
- the URL resolver and the middleware chain's bookkeeping: two paths, matched here;
- the body spooled to a temporary file: a run's body is bounded (RTDASH_MAX_BODY_BYTES), so
  it is read into memory, and no further than one byte past that bound;
- a task: Django's handler answers in one task while another listens for the client hanging
  up. Here a JSON answer nobody is left to read is dropped by the server (the view shields
  the run itself from any cancel, a server's included), and a stream is watched for its
  client leaving only from WATCH_STREAM_AFTER_SECONDS after its start, so its first byte
  waits for no listener and a short stream needs none.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIRequest, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.core.signals import setting_changed
from django.urls import set_script_prefix, set_urlconf
from django.utils.log import log_response

from rtdash.gateway_handler import (
    GatewayASGIHandler,
    after_response_hooks,
    close_response,
    protected,
)
from rtdash.unavailable import answer_database_unavailable
from runs.core import sync_thread
from runs.gateway import views

RUN_PATH = "/v1/run"
# /v1/agents/{slug}/run, the slug as Django's <str:> converter takes it (no slash).
LEGACY_RUN_PATH = re.compile(r"/v1/agents/(?P<slug>[^/]+)/run")


@dataclass(frozen=True)
class RunRoute:
    agent_from_path: str | None  # the legacy path's agent


def match_run(scope) -> RunRoute | None:
    """The run a request is, when this module serves it; None for the rest. Other methods get
    their 405 from Django's handler, and an app mounted under a root path or a query string
    that is not UTF-8 its answer too."""
    if scope["method"] != "POST" or scope.get("root_path"):
        return None
    if not _utf8(scope.get("query_string", b"")):
        return None
    path = scope["path"]
    if path == RUN_PATH:
        return RunRoute(None)
    legacy = LEGACY_RUN_PATH.fullmatch(path)
    if legacy is not None:
        return RunRoute(legacy["slug"])
    return None


def _utf8(query: bytes) -> bool:
    # A query string Django cannot decode gets its handler's 400 (logged, with its signals).
    try:
        query.decode()
    except UnicodeDecodeError:
        return False
    return True


async def read_bounded_body(receive, limit: int) -> bytes:
    """The request body, up to one byte past `limit` (the view refuses it then, with its
    413); RequestAborted if the client leaves first."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestAborted
        chunk = message.get("body", b"")
        if size + len(chunk) > limit:
            chunks.append(chunk[: limit + 1 - size])
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


# The request's RunRoute, for the view at the end of the chain (which takes only the request).
_ROUTE = "_rtdash_run_route"


async def _answer(request):
    try:
        route = getattr(request, _ROUTE)
        return await views.answer_run(request, route.agent_from_path)
    except Exception as error:
        response = answer_database_unavailable(request, error)
        if response is None:
            raise
        return response


# A stream is watched for its client leaving from this long after its start on: its first
# byte waits for no listener task, a short stream needs none, and a client that leaves a long
# one (or one still waiting for its first frame) is let go a moment later.
WATCH_STREAM_AFTER_SECONDS = 0.05


class _Departure:
    """Watches a streaming request for its client hanging up, from WATCH_STREAM_AFTER_SECONDS
    on, and then cancels the task sending the stream."""

    def __init__(self, receive) -> None:
        self.departed = False
        self._receive = receive
        self._sender = asyncio.current_task()
        self._watching: asyncio.Task | None = None
        self._timer = asyncio.get_running_loop().call_later(WATCH_STREAM_AFTER_SECONDS, self._watch)

    def _watch(self) -> None:
        self._watching = asyncio.create_task(self._wait())

    async def _wait(self) -> None:
        # Body left unread past the bound may still come first; only a disconnect counts.
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.departed = True
        self._sender.cancel()

    def stop(self) -> None:
        self._timer.cancel()
        if self._watching is not None:
            self._watching.cancel()


class RunEndpoint:
    """The ASGI app for the run paths (see match_run)."""

    def __init__(self) -> None:
        # Django's own response writer, for every answer but a stream.
        self._writer = GatewayASGIHandler()
        self._chain = None
        # The chain reads its settings (SecurityMiddleware's) when it is made: made once, and
        # made again after a setting changes (tests override them).
        setting_changed.connect(self._forget_chain, weak=False)

    def _forget_chain(self, **_kwargs) -> None:
        self._chain = None

    def chain(self):
        """The view behind the gateway's protections and Django's last-resort error answer."""
        if self._chain is None:
            # Wrapped twice, as Django's handler wraps each layer: a view's unexpected error
            # becomes its 500 inside the protections, so it still carries their headers.
            self._chain = convert_exception_to_response(
                protected(convert_exception_to_response(_answer))
            )
        return self._chain

    async def __call__(self, scope, receive, send, route: RunRoute) -> None:
        try:
            body = await read_bounded_body(receive, settings.RTDASH_MAX_BODY_BYTES)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        set_urlconf(settings.ROOT_URLCONF)
        request = ASGIRequest(scope, io.BytesIO(body))
        hooks = after_response_hooks(request, scope)
        setattr(request, _ROUTE, route)
        response = None
        try:
            response = await self.chain()(request)
            response._resource_closers.append(request.close)
            if response.status_code >= 400:
                await sync_to_async(log_response, thread_sensitive=False)(
                    "%s: %s",
                    response.reason_phrase,
                    request.path,
                    response=response,
                    request=request,
                )
            # A server may refuse to send to a client that has left (ASGI 2.4): the run is
            # recorded all the same, and there is nobody left to tell.
            with contextlib.suppress(OSError):
                if response.streaming:
                    await send_stream(self._writer, response, receive, send)
                else:
                    await self._writer.send_response(response, send)
        finally:
            try:
                hooks.run()
            finally:
                await sync_thread.call(close_response, request, response)


async def send_stream(writer: GatewayASGIHandler, response, receive, send) -> None:
    """Send a streamed response with Django's writer, in this task, stopping when the client
    leaves: the body's iterator is closed then (the view's ClientSink lets go of the run,
    which is still read and recorded)."""
    departure = _Departure(receive)
    try:
        await writer.send_response(response, send)
    except asyncio.CancelledError:
        # Only the watcher's own cancel is swallowed: one from the server as well (shutting
        # down) still ends the task.
        if not departure.departed or asyncio.current_task().uncancel() > 0:
            raise
    finally:
        departure.stop()
