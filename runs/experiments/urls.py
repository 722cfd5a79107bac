"""Experiments: the pages and /api/experiments."""

from __future__ import annotations

from django.urls import path

from runs.experiments import api, views

urlpatterns = [
    path("experiments/", views.experiment_list, name="experiment_list"),
    path("experiments/new/", views.experiment_new, name="experiment_new"),
    path("experiments/<int:experiment_id>/", views.experiment_detail, name="experiment_detail"),
    path("experiments/<int:experiment_id>/stop/", views.experiment_stop, name="experiment_stop"),
    path(
        "experiments/<int:experiment_id>/resume/",
        views.experiment_resume,
        name="experiment_resume",
    ),
    path("api/experiments", api.api_experiments, name="api_experiments"),
    path("api/experiments/<int:experiment_id>", api.api_experiment, name="api_experiment"),
    path(
        "api/experiments/<int:experiment_id>/cancel",
        api.api_experiment_cancel,
        name="api_experiment_cancel",
    ),
    path(
        "api/experiments/<int:experiment_id>/resume",
        api.api_experiment_resume,
        name="api_experiment_resume",
    ),
]
