"""The drop-in RunTools API under /v1/. Nothing but these paths is proxied."""

from __future__ import annotations

from django.urls import path, re_path

from runs.gateway import views as gateway

# Upstream ids are opaque: accept anything but a slash, and let RunTools judge them.
urlpatterns = [
    path("run", gateway.run, name="gateway_run"),
    path("run/threads", gateway.run_threads, name="gateway_run_threads"),
    path("run/threads/<str:thread_id>", gateway.run_thread, name="gateway_run_thread"),
    # After run/threads, which is no run id.
    path("run/<str:run_id>", gateway.upstream_run, name="gateway_upstream_run"),
    path("agents", gateway.agents, name="gateway_agents"),
    path("agents/<str:slug>", gateway.agent, name="gateway_agent"),
    path("agents/<str:slug>/run", gateway.legacy_run, name="gateway_legacy_run"),
    path("threads", gateway.threads, name="gateway_threads"),
    path("threads/<str:thread_id>", gateway.thread, name="gateway_thread"),
    path("threads/<str:thread_id>/events", gateway.thread_events, name="gateway_thread_events"),
    re_path(r"^(?P<rest>.*)$", gateway.not_proxied),
]
