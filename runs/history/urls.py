"""Run history and threads: the runs list and its exports, one run, threads, one thread."""

from __future__ import annotations

from django.urls import path

from runs.history import views as history

# Thread ids are the upstream's and opaque: anything but a slash, as in the gateway's routes.
urlpatterns = [
    path("runs/", history.run_list, name="run_list"),
    path("runs/export.<slug:fmt>", history.run_export, name="run_export"),
    path("runs/<int:run_id>/", history.run_detail, name="run_detail"),
    path("threads/", history.thread_list, name="thread_list"),
    path("threads/<str:thread_id>/", history.thread_detail, name="thread_detail"),
    path("threads/<str:thread_id>/rename/", history.thread_rename, name="thread_rename"),
    path("threads/<str:thread_id>/archive/", history.thread_archive, name="thread_archive"),
    path("threads/<str:thread_id>/delete/", history.thread_delete, name="thread_delete"),
]
