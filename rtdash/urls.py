"""URL map. Each feature keeps its routes in its own module under runs/."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from runs.operations.views import metrics_page

urlpatterns = [
    path("admin/", admin.site.urls),
    # The drop-in RunTools API (token-authenticated, JSON envelopes).
    path("v1/", include("runs.gateway.urls")),
    # Prometheus metrics, off unless RTDASH_METRICS_TOKEN is set (docs/operations.md).
    path("metrics", metrics_page, name="metrics"),
    # Pages for people (session-authenticated).
    path("", include("runs.urls")),
]

# A database that cannot be reached answers 503 even when the error escapes every view.
handler500 = "rtdash.unavailable.server_error"
