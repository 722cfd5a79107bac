"""Websocket routes (Channels), served under SameOriginValidator(WebsocketAuthStack()) in
rtdash/asgi.py."""

from __future__ import annotations

from django.urls import path

from runs.playground.consumers import RunConsumer

websocket_urlpatterns: list = [
    # A playground tab that will start a run.
    path("ws/playground/", RunConsumer.as_asgi()),
    # Watching one run: after a reload, a teammate, a link; ?after=<sequence> to resume.
    path("ws/runs/<int:run_id>/", RunConsumer.as_asgi()),
]
