"""Usage and cost reports, their exports, prices, budgets, and /api/usage."""

from __future__ import annotations

from django.urls import path

from runs.reports import views as reports_views

urlpatterns = [
    path("reports", reports_views.reports, name="reports"),
    path("reports/export.csv", reports_views.report_export, name="report_export"),
    path("reports/prices", reports_views.prices, name="prices"),
    path("reports/prices/add", reports_views.price_add, name="price_add"),
    path("reports/prices/<int:price_id>/delete", reports_views.price_delete, name="price_delete"),
    path("reports/budgets", reports_views.budgets, name="budgets"),
    path("reports/budgets/set", reports_views.budget_set, name="budget_set"),
    path(
        "reports/budgets/<int:budget_id>/delete",
        reports_views.budget_delete,
        name="budget_delete",
    ),
    path("reports/estimate", reports_views.run_estimate, name="run_estimate"),
    path("api/usage", reports_views.api_usage, name="api_usage"),
]
