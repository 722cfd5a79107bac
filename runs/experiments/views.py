"""Experiment pages: the list, a new experiment, one experiment (live while it runs), Stop.

Pages reach the team's data through runs.core.access. While an experiment runs, its table is
polled with htmx (the same fragment the page includes), and the page works without it.
"""

from __future__ import annotations

from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from runs.core.access import TeamRequest, for_team, get_for_team_or_404, team_view
from runs.experiments.create import create_experiment
from runs.experiments.forms import ExperimentForm
from runs.experiments.results import experiment_data, page_rows
from runs.experiments.resume import is_resumable, resume_experiment
from runs.experiments.runner import reap_stale_experiments, request_cancel, start_in_background
from runs.models import Experiment

LIST_LIMIT = 100


@require_GET
@team_view()
def experiment_list(request: TeamRequest) -> HttpResponse:
    reap_stale_experiments()
    experiments = for_team(Experiment, request.team).order_by("-created_at")[:LIST_LIMIT]
    context = {"experiments": experiments, "can_run": request.membership.can_run}
    return render(request, "runs/experiments/list.html", context)


@require_http_methods(["GET", "POST"])
@team_view(run=True)
def experiment_new(request: TeamRequest) -> HttpResponse:
    if request.method == "POST":
        form = ExperimentForm(request.POST)
        spec = form.spec() if form.is_valid() else None
        if spec is not None:
            try:
                experiment = create_experiment(request.team, spec, user=request.user)
            except Http404:
                form.add_error(None, "No such thread or runs in this team.")
            else:
                start_in_background(experiment.pk)
                return redirect("experiment_detail", experiment.pk)
    else:
        initial = {"thread": request.GET.get("thread", "")}
        # Ticked rows of the runs list send one `runs` each; the filter's button one list.
        initial["runs"] = ",".join(request.GET.getlist("runs"))
        agent = request.GET.get("agent", "")
        initial["variants"] = f"agent={agent}" if agent else ""
        form = ExperimentForm(initial=initial)
    source = form["thread"].value() or form["runs"].value()
    # "Replay selected" on the runs list (it sends `picked`) with no row ticked.
    nothing_ticked = request.method == "GET" and "picked" in request.GET and not source
    context = {"form": form, "source": source, "nothing_ticked": nothing_ticked}
    return render(request, "runs/experiments/new.html", context)


@require_GET
@team_view()
def experiment_detail(request: TeamRequest, experiment_id: int) -> HttpResponse:
    reap_stale_experiments()
    experiment = get_for_team_or_404(Experiment, request.team, pk=experiment_id)
    data = experiment_data(experiment)
    context = {
        "experiment": experiment,
        "data": data,
        "rows": page_rows(data),
        "can_run": request.membership.can_run,
        "resumable": is_resumable(experiment),
    }
    if request.htmx:
        return render(request, "runs/experiments/_results.html", context)
    return render(request, "runs/experiments/detail.html", context)


@require_POST
@team_view(run=True)
def experiment_stop(request: TeamRequest, experiment_id: int) -> HttpResponse:
    experiment = get_for_team_or_404(Experiment, request.team, pk=experiment_id)
    request_cancel(experiment)
    return redirect("experiment_detail", experiment.pk)


@require_POST
@team_view(run=True)
def experiment_resume(request: TeamRequest, experiment_id: int) -> HttpResponse:
    reap_stale_experiments()
    experiment = get_for_team_or_404(Experiment, request.team, pk=experiment_id)
    if resume_experiment(experiment.pk):
        start_in_background(experiment.pk)
    return redirect("experiment_detail", experiment.pk)
