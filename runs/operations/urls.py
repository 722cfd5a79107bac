"""Alert settings and the alerts page (/metrics is routed in rtdash/urls.py)."""

from __future__ import annotations

from django.urls import path

from runs.operations import views

urlpatterns = [
    path("settings/alerts/", views.alert_settings, name="alert_settings"),
    path("settings/alerts/rules/", views.rule_add, name="alert_rule_add"),
    path(
        "settings/alerts/rules/<int:rule_id>/delete/", views.rule_delete, name="alert_rule_delete"
    ),
    path("settings/alerts/destinations/", views.destination_add, name="alert_destination_add"),
    path(
        "settings/alerts/destinations/<int:destination_id>/delete/",
        views.destination_delete,
        name="alert_destination_delete",
    ),
    path("alerts/", views.alert_log, name="alert_log"),
]
