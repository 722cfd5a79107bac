"""An ASGI handler for the /v1/ gateway, shaped for latency.

Profiling the gateway (bench/gateway.py, cProfile in-process) showed two costs Django adds to
every async request that the gateway does not need:
- each synchronous middleware hook runs in a worker thread for an async view; the gateway needs
  none of them (no sessions, cookies, CSRF or messages: a token authenticates each request);
- Django wraps each request in a ThreadSensitiveContext, which starts (and joins) a fresh
  thread for the request's first thread-sensitive call: about 1.5 ms per request here.
Without the context, thread-sensitive calls share asgiref's one long-lived sync thread, where
the request signals also open and close database connections, so hygiene is unchanged.
"""

from __future__ import annotations

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response

GATEWAY_PREFIX = "/v1/"


class GatewayASGIHandler(ASGIHandler):
    async def __call__(self, scope, receive, send) -> None:
        await self.handle(scope, receive, send)

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        get_response = self._get_response_async if is_async else self._get_response
        self._middleware_chain = convert_exception_to_response(get_response)


def split_by_path(gateway_app, pages_app):
    """Send /v1/... to the gateway handler and everything else to the full Django stack."""

    async def app(scope, receive, send):
        if scope["path"].startswith(GATEWAY_PREFIX):
            return await gateway_app(scope, receive, send)
        return await pages_app(scope, receive, send)

    return app
