"""Reconciliation with RunTools' own usage and billing."""

from __future__ import annotations

from django.urls import path

from runs.accounting import views

urlpatterns = [
    path("accounting/reconciliation", views.reconciliation, name="reconciliation"),
    path("api/reconciliation", views.api_reconciliation, name="api_reconciliation"),
]
