"""Run history and threads: the runs list and its exports, one run, threads, one thread."""

from __future__ import annotations

from django.urls import path

from runs.history import exports, thread_views
from runs.history import views as run_views

# Thread ids are the upstream's and opaque: anything but a slash, as in the gateway's routes.
urlpatterns = [
    path("runs/", run_views.run_list, name="run_list"),
    path("runs/export.<slug:fmt>", exports.run_export, name="run_export"),
    path("runs/<int:run_id>/", run_views.run_detail, name="run_detail"),
    path("threads/", thread_views.thread_list, name="thread_list"),
    path("threads/<str:thread_id>/", thread_views.thread_detail, name="thread_detail"),
    path("threads/<str:thread_id>/rename/", thread_views.thread_rename, name="thread_rename"),
    path("threads/<str:thread_id>/archive/", thread_views.thread_archive, name="thread_archive"),
    path("threads/<str:thread_id>/delete/", thread_views.thread_delete, name="thread_delete"),
]
