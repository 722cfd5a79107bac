from __future__ import annotations

from django.urls import include, path

from runs import views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("healthz", views.healthz, name="healthz"),
    # Login, logout, team switching and team settings (members, keys, tokens, audit).
    path("", include("runs.team_urls")),
]
