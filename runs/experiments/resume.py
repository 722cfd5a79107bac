"""Resume: an ended experiment (a dead worker, Stop, a budget) runs the cases it did not finish.

A case is finished when its run completed (or was accepted for later: registered,
dispatched); everything else — skipped, failed, interrupted, stopped — is asked again, in a
new run; the earlier runs stay in the history. Independent cases (runs, prompts) are re-run
one by one. A thread's turns depend on each other: in each variant, from the first turn that
did not finish, that turn and every later one run again, in order, continuing the variant's
own thread where its finished turns left it.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from runs.models import Experiment, ExperimentStatus, RunStatus, SourceKind, Trial, TrialStatus

RESUMABLE = frozenset({ExperimentStatus.FAILED, ExperimentStatus.CANCELLED})
FINISHED_RUN = frozenset({RunStatus.COMPLETED, RunStatus.REGISTERED, RunStatus.DISPATCHED})


def _finished(trial: Trial) -> bool:
    return (
        trial.status == TrialStatus.DONE
        and trial.run is not None
        and trial.run.status in FINISHED_RUN
    )


def _to_rerun(experiment: Experiment) -> list[Trial]:
    trials = list(
        Trial.objects.filter(variant__experiment=experiment)
        .select_related("run", "variant")
        .order_by("variant__position", "case__position")
    )
    if experiment.source_kind != SourceKind.THREAD:
        return [trial for trial in trials if not _finished(trial)]
    rerun: list[Trial] = []
    by_variant: dict[int, list[Trial]] = {}
    for trial in trials:
        by_variant.setdefault(trial.variant_id, []).append(trial)
    for turns in by_variant.values():
        first_lost = next((i for i, turn in enumerate(turns) if not _finished(turn)), None)
        if first_lost is None:
            continue
        variant = turns[0].variant
        # The thread to continue: the one the last finished turn ran in (the worker may have
        # died before it noted the thread on the variant); none when turn 1 is lost.
        thread = turns[first_lost - 1].run.upstream_thread_id if first_lost else ""
        if variant.upstream_thread_id != thread:
            variant.upstream_thread_id = thread
            variant.save(update_fields=["upstream_thread_id"])
        rerun.extend(turns[first_lost:])
    return rerun


def resume_experiment(experiment_id: int) -> bool:
    """Put the unfinished cases back to pending and mark the experiment running again.

    False when it is not resumable (running, completed, or nothing left to run). The caller
    starts the replay (runner.start_in_background) once this has committed.
    """
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment_id)
        if experiment.status not in RESUMABLE:
            return False
        rerun = _to_rerun(experiment)
        if not rerun:
            return False
        Trial.objects.filter(pk__in=[trial.pk for trial in rerun]).update(
            status=TrialStatus.PENDING, run=None, error_code="", error_message=""
        )
        experiment.status = ExperimentStatus.RUNNING
        experiment.cancel_requested = False
        experiment.error_message = ""
        experiment.finished_at = None
        experiment.heartbeat_at = timezone.now()
        experiment.save(
            update_fields=[
                "status",
                "cancel_requested",
                "error_message",
                "finished_at",
                "heartbeat_at",
            ]
        )
    return True


def is_resumable(experiment: Experiment) -> bool:
    """Whether the page offers Resume (resume_experiment decides, under a lock)."""
    return experiment.status in RESUMABLE
