"""The websocket origin check: a browser may open a socket only from this site's own pages.

Channels' AllowedHostsOriginValidator compares the Origin's host with ALLOWED_HOSTS and ignores
its scheme and port, so a page at http://127.0.0.1:9999 (anything else listening on the
machine) could open a logged-in user's socket to http://127.0.0.1:8000 and stream his runs.
Here the whole origin (scheme, host and port) must be the site's own, as Django's CSRF check
asks of a form post: the scheme and Host of the socket request itself (the scheme through
SECURE_PROXY_SSL_HEADER, the host through ALLOWED_HOSTS and USE_X_FORWARDED_HOST, exactly as
for a page), or one of CSRF_TRUSTED_ORIGINS.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.http.request import is_same_domain


class _SocketRequest(HttpRequest):
    """Just enough of a request, from a websocket scope, for Django's scheme and host rules."""

    def __init__(self, scope) -> None:
        super().__init__()
        self._socket_scheme = "https" if scope.get("scheme") == "wss" else "http"
        for raw_name, raw_value in scope.get("headers", []):
            name = "HTTP_" + raw_name.decode("latin1").upper().replace("-", "_")
            value = raw_value.decode("latin1")
            self.META[name] = f"{self.META[name]},{value}" if name in self.META else value
        server = scope.get("server") or (None, None)
        self.META["SERVER_NAME"], self.META["SERVER_PORT"] = server[0] or "", server[1] or ""

    def _get_scheme(self) -> str:
        return self._socket_scheme


def own_origin(scope) -> str | None:
    """This site's origin as seen by the socket request, or None when its Host is not allowed."""
    request = _SocketRequest(scope)
    try:
        return f"{request.scheme}://{request.get_host()}"
    except DisallowedHost:
        return None


def _trusted(origin: str) -> bool:
    """One of CSRF_TRUSTED_ORIGINS, with Django's meaning: exact, or `scheme://*.domain`."""
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in trusted:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    return any(
        is_same_domain(parsed.netloc, urlsplit(pattern).netloc[1:])
        for pattern in trusted
        if "*" in pattern and urlsplit(pattern).scheme == parsed.scheme
    )


def origin_allowed(scope) -> bool:
    origins = [value for name, value in scope.get("headers", []) if name == b"origin"]
    if len(origins) != 1:
        return False  # browsers always send exactly one; without it, nothing to trust
    origin = origins[0].decode("latin1")
    return origin == own_origin(scope) or _trusted(origin)


class SameOriginValidator:
    """ASGI middleware: refuse (HTTP 403) a websocket whose Origin is not this site's."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
