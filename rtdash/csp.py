"""Content-Security-Policy on every response Django's pages send.

The pages load only rtdash's own scripts and styles (no inline script, no `on*=` attribute,
no `style=` attribute, no eval), so an injected `<script>` or style in upstream text that
escaped escaping would still not run. `connect-src 'self'` also covers the playground's
websocket on the same host and port (ws: from http:, wss: from https:, CSP Level 3).
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

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


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Adds POLICY unless a view set its own; sync and async alike (MiddlewareMixin)."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        # With DEBUG on, Django answers an exception with its own page of inline styles and
        # scripts, for the developer's eyes only: that page is left as Django made it.
        if settings.DEBUG:
            request.rtdash_debug_page = True

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if settings.DEBUG and _is_debug_page(request, response):
            return response
        response.headers.setdefault("Content-Security-Policy", POLICY)
        return response


def _is_debug_page(request: HttpRequest, response: HttpResponseBase) -> bool:
    # An unknown URL never reaches a view (so no process_exception): DEBUG's 404 page for it.
    unresolved = response.status_code == 404 and getattr(request, "resolver_match", None) is None
    return getattr(request, "rtdash_debug_page", False) or unresolved
