"""Turning a checked Spec into an Experiment with its cases, variants and trials.

Cases from recorded history are read through runs.core.access, so another team's thread or
runs are as unknown (404) as ones that do not exist.
"""

from __future__ import annotations

from django.db import transaction
from django.http import Http404

from runs.core.access import for_team
from runs.core.validation import InvalidRequest
from runs.experiments.spec import MAX_CASES, Spec
from runs.models import Case, Experiment, Run, SourceKind, Team, Trial, Variant
from runs.pipeline.recording import storable


def _input_of(run: Run) -> dict:
    """What a recorded run asked: its prompt, or its messages when it sent those."""
    if run.messages:
        return {"prompt": "", "messages": run.messages}
    return {"prompt": run.prompt, "messages": None}


def _thread_cases(team: Team, thread_id: str) -> list[Case]:
    runs = list(
        for_team(Run, team)
        .filter(upstream_thread_id=storable(thread_id))  # as stored: no NUL
        .exclude(prompt="", messages=None)
        .order_by("started_at", "pk")[: MAX_CASES + 1]
    )
    if not runs:
        raise Http404("No such thread")
    if len(runs) > MAX_CASES:
        raise InvalidRequest(
            "source.thread", f"The thread has more than {MAX_CASES} turns; at most that replay."
        )
    return [Case(position=i, baseline_run=run, **_input_of(run)) for i, run in enumerate(runs)]


def _run_cases(team: Team, run_ids: list[int]) -> list[Case]:
    found = {run.pk: run for run in for_team(Run, team).filter(pk__in=run_ids)}
    if len(found) != len(run_ids):
        raise Http404("No such run")
    return [
        Case(position=i, baseline_run=found[pk], **_input_of(found[pk]))
        for i, pk in enumerate(run_ids)
    ]


def create_experiment(team: Team, spec: Spec, *, user=None, token=None) -> Experiment:
    """Record the experiment; raises Http404 for a thread or run the team does not have."""
    if spec.thread:
        kind, cases = SourceKind.THREAD, _thread_cases(team, spec.thread)
    elif spec.run_ids:
        kind, cases = SourceKind.RUNS, _run_cases(team, spec.run_ids)
    else:
        kind = SourceKind.PROMPTS
        cases = [
            Case(
                position=i,
                prompt=storable(c.prompt),
                messages=storable(c.messages),
                metadata=storable(c.metadata),
            )
            for i, c in enumerate(spec.prompts)
        ]
    default_name = f"Replay of {spec.thread}" if spec.thread else f"{len(cases)} cases"
    with transaction.atomic():
        experiment = Experiment.objects.create(
            team=team,
            # rtdash's copy, as every stored text: no NUL (PostgreSQL refuses it).
            name=storable(spec.name or default_name),
            source_kind=kind,
            source_thread=storable(spec.thread),
            created_by=user if user is not None and user.is_authenticated else None,
            token=token,
        )
        for case in cases:
            case.experiment = experiment
        Case.objects.bulk_create(cases)
        variants = Variant.objects.bulk_create(
            Variant(
                experiment=experiment,
                position=i,
                agent=v.agent,
                config=v.config,
                metadata=v.metadata,
            )
            for i, v in enumerate(spec.variants)
        )
        saved_cases = list(experiment.cases.all())
        Trial.objects.bulk_create(
            Trial(variant=variant, case=case) for variant in variants for case in saved_cases
        )
    return experiment
