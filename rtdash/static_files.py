"""Static files served by rtdash itself (RTDASH_SERVE_STATIC), with the headers pages get.

Django's static handler answers before any middleware, so SecurityMiddleware's nosniff never
reaches these responses; this handler adds it, and a Cache-Control, to every one of them.
"""

from __future__ import annotations

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.http import HttpRequest, HttpResponseBase

# File names carry no content hash, so a browser must revalidate (a 304 from Last-Modified)
# rather than keep an old playground.js next to new templates after an upgrade.
STATIC_CACHE_CONTROL = "no-cache"


class StaticFilesWithHeaders(ASGIStaticFilesHandler):
    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        response = await super().get_response_async(request)
        # A browser must never run a file as a script or style it guessed was one.
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Cache-Control", STATIC_CACHE_CONTROL)
        return response
