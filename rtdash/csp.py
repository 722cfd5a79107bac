"""Content-Security-Policy on every response Django's pages send.

The pages load only rtdash's own scripts and styles (no inline script, no `on*=` attribute,
no `style=` attribute, no eval), so an injected `<script>` or style in upstream text that
escaped escaping would still not run. `connect-src 'self'` also covers the playground's
websocket on the same host and port (ws: from http:, wss: from https:, CSP Level 3).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "object-src 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    """Adds POLICY unless a view set its own.

    Sync and async alike, so an async view's response gets its header without the trip
    through a worker thread that a MiddlewareMixin hook would cost under ASGI.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._acall(request)
        return self._add_policy(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        return self._add_policy(request, await self.get_response(request))

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        # With DEBUG on, Django answers an exception with its own page of inline styles and
        # scripts, for the developer's eyes only: that page is left as Django made it.
        if settings.DEBUG:
            request.rtdash_debug_page = True

    def _add_policy(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if settings.DEBUG and _is_debug_page(request, response):
            return response
        response.headers.setdefault("Content-Security-Policy", POLICY)
        return response


def _is_debug_page(request: HttpRequest, response: HttpResponseBase) -> bool:
    # An unknown URL never reaches a view (so no process_exception): DEBUG's 404 page for it.
    unresolved = response.status_code == 404 and getattr(request, "resolver_match", None) is None
    return getattr(request, "rtdash_debug_page", False) or unresolved
