"""The playground: the page, its run, code and stop endpoints (its socket is in routing.py)."""

from __future__ import annotations

from django.urls import path

from runs.playground import compare
from runs.playground import views as playground

urlpatterns = [
    path("playground", playground.playground, name="playground"),
    path("playground/compare", compare.compare, name="playground_compare"),
    path("playground/run", playground.run_now, name="playground_run"),
    path("playground/code", playground.code, name="playground_code"),
    path("playground/runs/<int:run_id>/card", playground.result_card, name="playground_card"),
    path("playground/runs/<int:run_id>/stop", playground.stop, name="playground_stop"),
]
