"""An ASGI handler for the /v1/ gateway, shaped for latency.

Profiling the gateway (bench/gateway.py, cProfile in-process) showed costs Django adds to
every async request that the gateway does not need:
- each synchronous middleware hook runs in a worker thread for an async view; the gateway needs
  none of them (no sessions, cookies, CSRF or messages: a token authenticates each request);
- Django wraps each request in a ThreadSensitiveContext, which starts (and joins) a fresh
  thread for the request's first thread-sensitive call: about 1.5 ms per request here.
  Without the context, thread-sensitive calls share asgiref's one long-lived sync thread, where
  the request signals also open and close database connections, so hygiene is unchanged;
- Django sends `request_started` from the event loop, and its receivers (closing stale
  database connections) are synchronous: a round trip to the sync thread of its own, ~0.4 ms
  on an idle machine. Every gateway view goes to that thread anyway, to authenticate, so the
  signal is sent there instead (`send_deferred_request_started`), on the same thread as before.

What the pages' middleware would have done that the gateway still needs is done inline, on
the event loop (no thread hop): the Host header is checked against ALLOWED_HOSTS, and
SecurityMiddleware's hooks apply SECURE_SSL_REDIRECT, HSTS and its other headers. A database
that cannot be reached answers 503 in the RunTools envelope (rtdash.unavailable).

`handle` copies Django's; COPIED_FROM_DJANGO records the source it was written against, and
the system check rtdash.E005 (runs/checks.py) refuses to start on a Django whose copy differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.exceptions import DisallowedHost, RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response
from django.middleware.security import SecurityMiddleware
from django.urls import set_script_prefix

from rtdash.unavailable import answer_database_unavailable
from runs.core import sync_thread
from runs.core.errors import error_response as envelope

GATEWAY_PREFIX = "/v1/"
# Set on a request whose `request_started` signal is still to be sent.
_DEFERRED = "_deferred_request_started"
# The request's AfterResponse: work its view wants done once the response has left.
_AFTER_RESPONSE = "_after_response"
# Django logs a refused Host header here for pages; the gateway's go to the same place.
_host_logger = logging.getLogger("django.security.DisallowedHost")

# SHA-256 of the source of the Django methods this handler copies or replaces, as in Django
# 5.2. A Django whose methods differ may have changed what the copy must do (a security fix
# in `handle`, a new middleware attribute): re-read them and update the copy first.
COPIED_FROM_DJANGO = {
    "ASGIHandler.__call__": "f756809e9c9308dcccb78a301fccf09196e80cdc4745690f80384d09b69dd102",
    "ASGIHandler.handle": "98faeb5bef800331e6a8002fbc96b30e4122a23438ae45a047190a531ea11323",
    "BaseHandler.load_middleware": (
        "a1fb7ee5f8586195da2174d1bbc2bbfc7ca19b9d26ea66412cb434f45bf6d467"
    ),
}
_DJANGO_METHODS = {
    "ASGIHandler.__call__": ASGIHandler.__call__,
    "ASGIHandler.handle": ASGIHandler.handle,
    "BaseHandler.load_middleware": BaseHandler.load_middleware,
}


def source_digest(function) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def drifted_django_methods() -> list[str]:
    """The copied Django methods whose installed source is not the one the copy follows."""
    return [
        name
        for name, function in _DJANGO_METHODS.items()
        if source_digest(function) != COPIED_FROM_DJANGO[name]
    ]


class GatewayASGIHandler(ASGIHandler):
    async def __call__(self, scope, receive, send) -> None:
        await self.handle(scope, receive, send)

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = [answer_database_unavailable]
        if not is_async:
            raise ValueError("GatewayASGIHandler serves ASGI only")
        get_response = convert_exception_to_response(self._get_response_async)
        self._middleware_chain = convert_exception_to_response(protected(get_response))

    async def handle(self, scope, receive, send) -> None:
        """Django's ASGIHandler.handle (5.2), with `request_started` deferred."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            await signals.request_started.asend(sender=self.__class__, scope=scope)
            body_file.close()
            await self.send_response(error_response, send)
            await sync_to_async(error_response.close)()
            return
        after_response_hooks(request, scope)

        async def process_request(request, send):
            try:
                response = await self.run_get_response(request)
                # A cancel here is the client disconnecting while the response was being sent.
                with contextlib.suppress(asyncio.CancelledError):
                    await self.send_response(response, send)
            finally:
                # Sent, or never to be: the view's deferred work may start now.
                getattr(request, _AFTER_RESPONSE).run()
            return response

        # The client hanging up is noticed while the response is being made, as in Django.
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass  # the client left
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            response = None
        await sync_thread.call(close_response, request, response)
        body_file.close()


def protected(get_response):
    """What the pages' middleware stack does that the gateway needs, without its thread hops:
    SecurityMiddleware's hooks do no I/O, so they run here on the event loop."""
    security = SecurityMiddleware(get_response)

    async def protected(request):
        try:
            request.get_host()
        except DisallowedHost as refused:
            _host_logger.warning("%s", refused)
            return envelope(400, "bad_request", "Invalid Host header.")
        response = security.process_request(request)  # the HTTPS redirect, if any
        if response is None:
            response = await get_response(request)
        return security.process_response(request, response)

    return protected


class AfterResponse:
    """Callbacks a view leaves for after its response has been sent (or the client left).

    Work started while the response is still on its way competes with it for the GIL and the
    sync thread (a JSON run's record is finished in that thread), so it waits for this.
    Everything here runs on the event loop; a callback added after the response has left
    runs at once.
    """

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []
        self._ran = False

    def add(self, callback: Callable[[], None]) -> None:
        if self._ran:
            callback()
        else:
            self._callbacks.append(callback)

    def run(self) -> None:
        self._ran = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


def after_response(request, callback: Callable[[], None]) -> None:
    """Run `callback` (on the event loop) once the request's response has been sent; at once
    for a request this handler does not serve (Django's own, the test client)."""
    hooks = getattr(request, _AFTER_RESPONSE, None)
    if hooks is None:
        callback()
    else:
        hooks.add(callback)


def send_deferred_request_started(request) -> None:
    """Send the request's `request_started`, if the handler deferred it and it has not been
    sent yet. Call it from the sync thread, before the request's first database use."""
    scope = request.__dict__.pop(_DEFERRED, None)
    if scope is not None:
        signals.request_started.send(sender=GatewayASGIHandler, scope=scope)


def after_response_hooks(request, scope) -> AfterResponse:
    """Mark a request as served by rtdash's handlers: its `request_started` deferred to its
    first trip to the sync thread, and its AfterResponse (returned) to run once it is sent."""
    setattr(request, _DEFERRED, scope)
    hooks = AfterResponse()
    setattr(request, _AFTER_RESPONSE, hooks)
    return hooks


def close_response(request, response) -> None:
    """The request's end, in the sync thread: its response closed (which sends
    `request_finished`), or, when it was never answered (None), the signal alone. A request
    that never reached the sync thread still gets a matched pair of signals."""
    send_deferred_request_started(request)
    if response is None:
        signals.request_finished.send(sender=GatewayASGIHandler)
    else:
        response.close()


def split_by_path(gateway_app, pages_app, run_app=None, match_run=None):
    """Send a run (`match_run` says which requests are) to `run_app`, the rest of /v1/... to
    the gateway handler and everything else to the full Django stack."""

    async def app(scope, receive, send):
        if match_run is not None and (route := match_run(scope)) is not None:
            return await run_app(scope, receive, send, route)
        if scope["path"].startswith(GATEWAY_PREFIX):
            return await gateway_app(scope, receive, send)
        return await pages_app(scope, receive, send)

    return app
