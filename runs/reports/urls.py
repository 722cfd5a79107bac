"""Usage and cost reports, their exports, prices, budgets, and /api/usage."""

from __future__ import annotations

from django.urls import path

from runs.reports import api, budget_views, prices
from runs.reports import views as report_views

urlpatterns = [
    path("reports", report_views.reports, name="reports"),
    path("reports/export.csv", report_views.report_export, name="report_export"),
    path("reports/prices", prices.prices, name="prices"),
    path("reports/prices/add", prices.price_add, name="price_add"),
    path("reports/prices/<int:price_id>/delete", prices.price_delete, name="price_delete"),
    path("reports/budgets", budget_views.budgets, name="budgets"),
    path("reports/budgets/set", budget_views.budget_set, name="budget_set"),
    path(
        "reports/budgets/<int:budget_id>/delete",
        budget_views.budget_delete,
        name="budget_delete",
    ),
    path("reports/estimate", report_views.run_estimate, name="run_estimate"),
    path("api/usage", api.api_usage, name="api_usage"),
]
