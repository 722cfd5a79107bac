"""`/api/experiments`: create, read and stop experiments, with an rtdash token or a session.

Team-scoped like /api/usage: a token names its team, a session its current team. Errors are
RunTools' envelope; bad input is a 400 naming the field; another team's thread, runs or
experiment is a 404.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from runs.core.access import get_for_team_or_404
from runs.core.errors import GatewayError, error_response, refused_response
from runs.core.validation import InvalidRequest, invalid_response, parse_body, read_body
from runs.experiments.create import create_experiment
from runs.experiments.results import experiment_data
from runs.experiments.resume import resume_experiment
from runs.experiments.runner import reap_stale_experiments, request_cancel, start_in_background
from runs.experiments.spec import parse_spec
from runs.gateway.auth import ApiCaller, api_caller
from runs.models import Experiment

MAX_BODY_BYTES = 1024 * 1024


def _caller(request: HttpRequest, *, changes: bool) -> ApiCaller:
    """The team of the token on the request, else of the session; GatewayError otherwise."""
    caller = api_caller(request)
    if changes and caller.membership is not None:
        # Exempt from the middleware for tokens (no cookie, no CSRF); a session still needs it.
        refused = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})
        if refused is not None:
            raise GatewayError(403, "forbidden", "CSRF check failed.")
        if not caller.membership.can_run:
            raise GatewayError(404, "not_found", "Not available to your role.")
    return caller


@csrf_exempt
@require_POST
def api_experiments(request: HttpRequest) -> HttpResponse:
    """`POST /api/experiments`: record an experiment and start replaying it."""
    try:
        caller = _caller(request, changes=True)
        spec = parse_spec(parse_body(read_body(request, MAX_BODY_BYTES), MAX_BODY_BYTES))
        experiment = create_experiment(caller.team, spec, user=caller.user, token=caller.token)
    except GatewayError as problem:
        return refused_response(problem)
    except InvalidRequest as problem:
        return invalid_response(problem)
    except Http404 as missing:
        return error_response(404, "not_found", str(missing))
    start_in_background(experiment.pk)
    body = {"data": {"id": experiment.pk, "url": f"/experiments/{experiment.pk}/"}}
    return JsonResponse(body, status=201)


@require_GET
def api_experiment(request: HttpRequest, experiment_id: int) -> HttpResponse:
    """`GET /api/experiments/<id>`: the experiment case by case, baseline and variants."""
    try:
        caller = _caller(request, changes=False)
        reap_stale_experiments()
        experiment = get_for_team_or_404(Experiment, caller.team, pk=experiment_id)
    except GatewayError as problem:
        return refused_response(problem)
    except Http404:
        return error_response(404, "not_found", "No such experiment.")
    return JsonResponse({"data": experiment_data(experiment), "meta": {"currency": "USD"}})


@csrf_exempt
@require_POST
def api_experiment_cancel(request: HttpRequest, experiment_id: int) -> HttpResponse:
    """`POST /api/experiments/<id>/cancel`: Stop; the cases not yet run are skipped."""
    try:
        caller = _caller(request, changes=True)
        experiment = get_for_team_or_404(Experiment, caller.team, pk=experiment_id)
    except GatewayError as problem:
        return refused_response(problem)
    except Http404:
        return error_response(404, "not_found", "No such experiment.")
    request_cancel(experiment)
    return JsonResponse({"data": {"id": experiment.pk, "cancelRequested": True}}, status=202)


@csrf_exempt
@require_POST
def api_experiment_resume(request: HttpRequest, experiment_id: int) -> HttpResponse:
    """`POST /api/experiments/<id>/resume`: run again the cases an ended experiment did not
    finish (a dead worker, Stop, a budget); 409 when it is running, complete or has none."""
    try:
        caller = _caller(request, changes=True)
        reap_stale_experiments()
        experiment = get_for_team_or_404(Experiment, caller.team, pk=experiment_id)
    except GatewayError as problem:
        return refused_response(problem)
    except Http404:
        return error_response(404, "not_found", "No such experiment.")
    if not resume_experiment(experiment.pk):
        experiment.refresh_from_db(fields=["status"])
        return error_response(
            409,
            "conflict",
            f"The experiment is {experiment.status}; only a failed or cancelled experiment "
            "with unfinished cases can be resumed.",
        )
    start_in_background(experiment.pk)
    body = {
        "data": {"id": experiment.pk, "status": "running", "url": f"/experiments/{experiment.pk}/"}
    }
    return JsonResponse(body, status=202)
