"""Pages for people. Each feature keeps its routes in its own module."""

from __future__ import annotations

from django.urls import include, path

from runs import views

urlpatterns = [
    path("", views.overview, name="overview"),
    # Liveness (the process answers) and readiness (it can serve): see runs/health.py.
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    # Login, logout, team switching and team settings (members, keys, tokens, audit).
    path("", include("runs.teams.urls")),
    # Run history and threads: /runs, /runs/<id>, /threads, /threads/<id>, exports.
    path("", include("runs.history.urls")),
    # The playground: /playground and its run endpoints.
    path("", include("runs.playground.urls")),
    # Usage and cost reports, prices, budgets, /api/usage.
    path("", include("runs.reports.urls")),
    # Experiments: /experiments/ and /api/experiments.
    path("", include("runs.experiments.urls")),
    # Reconciliation with RunTools' usage and billing: /accounting/reconciliation, the API.
    path("", include("runs.accounting.urls")),
    # Alert rules and destinations (/settings/alerts/) and the alerts page (/alerts/).
    path("", include("runs.operations.urls")),
]
