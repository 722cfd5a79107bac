"""The replay engine: each trial is an ordinary run through the one run path.

A thread is replayed turn by turn, each variant in a fresh upstream thread of its own (its
first turn starts one, the next turns continue it), so each variant sees its own earlier
answers. Runs and prompt sets have independent cases. Concurrency is bounded per experiment
(RTDASH_EXPERIMENT_CONCURRENCY) and per process (RTDASH_EXPERIMENT_PROCESS_CONCURRENCY), so an
experiment cannot starve the gateway.

Whatever stops an experiment — a hard budget, Stop, a dead worker — leaves no trial pending:
each gets the reason, and the experiment ends `failed` or `cancelled`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs.core.loops import PerLoop
from runs.core.validation import validate_run
from runs.experiments.spec import last_user_text
from runs.models import (
    Experiment,
    ExperimentStatus,
    Run,
    Source,
    SourceKind,
    Trial,
    TrialStatus,
    Variant,
)
from runs.pipeline.budgets import BudgetExceeded
from runs.pipeline.start import NoRunToolsKey, launch

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5
# How often a trial waiting on its run looks for a Stop pressed on any worker.
CANCEL_POLL_SECONDS = 0.5

# Experiments this process is replaying right now (the reaper leaves them alone).
LIVE: dict[int, concurrent.futures.Future] = {}


def _concurrency() -> int:
    return max(1, int(getattr(settings, "RTDASH_EXPERIMENT_CONCURRENCY", 2)))


_process_slots = PerLoop(
    lambda: asyncio.Semaphore(
        max(1, int(getattr(settings, "RTDASH_EXPERIMENT_PROCESS_CONCURRENCY", 8)))
    )
)


@dataclass
class Stop:
    """Why the rest of an experiment is not run; the first reason wins."""

    code: str = ""
    message: str = ""

    def set(self, code: str, message: str) -> None:
        if not self.code:
            self.code, self.message = code, message


def _run_body(trial: Trial, variant: Variant, source_kind: str) -> dict:
    case = trial.case
    body: dict = {"agent": variant.agent, "stream": True}
    if case.messages and source_kind == SourceKind.THREAD:
        # A turn recorded with caller-managed `messages` carries the original conversation,
        # answers included; in the variant's own thread only the new user turn is asked, so
        # the variant sees its own earlier answers.
        body["prompt"] = last_user_text(case.messages)
    elif case.messages:
        body["messages"] = case.messages
    else:
        body["prompt"] = case.prompt
    if variant.config:
        body["config"] = variant.config
    # The case's metadata (a pasted prompt's), then the variant's, then which experiment.
    metadata = {**case.metadata, **variant.metadata, "experiment": trial.variant.experiment_id}
    body["metadata"] = metadata
    if variant.upstream_thread_id:
        body["threadId"] = variant.upstream_thread_id
    return body


async def _cancel_requested(experiment_id: int) -> bool:
    return await Experiment.objects.filter(pk=experiment_id, cancel_requested=True).aexists()


async def _skip(trial: Trial, code: str, message: str) -> None:
    trial.status, trial.error_code, trial.error_message = TrialStatus.SKIPPED, code, message
    await trial.asave(update_fields=["status", "error_code", "error_message"])


async def _run_trial(experiment: Experiment, trial: Trial, variant: Variant, stop: Stop) -> None:
    if not stop.code and await _cancel_requested(experiment.pk):
        stop.set("cancelled", "Stopped before this case ran.")
    if stop.code:
        await _skip(trial, stop.code, stop.message)
        return
    body = _run_body(trial, variant, experiment.source_kind)
    raw = json.dumps(body).encode()
    trial.status = TrialStatus.RUNNING
    await trial.asave(update_fields=["status"])
    try:
        started = await launch(
            experiment.team,
            validate_run(body, raw),
            source=Source.EXPERIMENT,
            user=experiment.created_by,
            token=experiment.token,
        )
    except (BudgetExceeded, NoRunToolsKey) as problem:
        code = getattr(problem, "code", "no_runtools_key")
        stop.set(code, str(problem))
        await _skip(trial, code, str(problem))
        return
    trial.run = started.run
    await trial.asave(update_fields=["run"])
    reader = started.reader
    if reader is not None and reader.task is not None:
        while not reader.task.done():
            done, _ = await asyncio.wait({reader.task}, timeout=CANCEL_POLL_SECONDS)
            if not done and await _cancel_requested(experiment.pk):
                stop.set("cancelled", "Stopped before this case ran.")
                reader.stop()
                await asyncio.wait({reader.task})
    run = await Run.objects.only("upstream_thread_id").aget(pk=started.run.pk)
    trial.status = TrialStatus.DONE
    await trial.asave(update_fields=["status"])
    if experiment.source_kind == SourceKind.THREAD and not variant.upstream_thread_id:
        # The variant's own thread, started by its first turn; the next turns continue it.
        variant.upstream_thread_id = run.upstream_thread_id
        await variant.asave(update_fields=["upstream_thread_id"])


async def _lane(experiment, trials: list[Trial], variant: Variant, stop: Stop, slots) -> None:
    """Trials that must run one after another (a variant's turns of a thread)."""
    for trial in trials:
        async with slots, _process_slots.get():
            await _run_trial(experiment, trial, variant, stop)


async def _beat(experiment_id: int) -> None:
    while True:
        await Experiment.objects.filter(pk=experiment_id).aupdate(heartbeat_at=timezone.now())
        await asyncio.sleep(HEARTBEAT_SECONDS)


async def run_experiment(experiment_id: int) -> Experiment:
    """Replay every pending trial of the experiment, then record how it ended."""
    experiment = await Experiment.objects.select_related("team", "created_by", "token").aget(
        pk=experiment_id
    )
    variants = {v.pk: v async for v in Variant.objects.filter(experiment=experiment)}
    pending = [
        trial
        async for trial in Trial.objects.filter(
            variant__experiment=experiment, status=TrialStatus.PENDING
        )
        .select_related("case")
        .order_by("variant__position", "case__position")
    ]
    for trial in pending:
        trial.variant = variants[trial.variant_id]
    if experiment.source_kind == SourceKind.THREAD:
        lanes = [[t for t in pending if t.variant_id == pk] for pk in variants]
    else:
        lanes = [[trial] for trial in pending]
    stop = Stop()
    slots = asyncio.Semaphore(_concurrency())
    heartbeat = asyncio.ensure_future(_beat(experiment_id))
    try:
        await asyncio.gather(
            *(
                _lane(experiment, lane, variants[lane[0].variant_id], stop, slots)
                for lane in lanes
                if lane
            )
        )
    finally:
        heartbeat.cancel()
        await sync_to_async(_finish)(experiment_id, stop)
    return await Experiment.objects.aget(pk=experiment_id)


def _finish(experiment_id: int, stop: Stop) -> None:
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment_id)
        if experiment.status != ExperimentStatus.RUNNING:
            return
        left = Trial.objects.filter(
            variant__experiment=experiment, status__in=[TrialStatus.PENDING, TrialStatus.RUNNING]
        )
        if stop.code == "cancelled" or experiment.cancel_requested:
            status = ExperimentStatus.CANCELLED
            left.update(
                status=TrialStatus.SKIPPED,
                error_code="cancelled",
                error_message="Stopped before this case ran.",
            )
        elif stop.code or left.exists():
            status = ExperimentStatus.FAILED
            left.update(
                status=TrialStatus.SKIPPED,
                error_code=stop.code or "not_run",
                error_message=stop.message or "The replay ended before this case ran.",
            )
        else:
            status = ExperimentStatus.COMPLETED
        experiment.status = status
        experiment.error_message = stop.message if status == ExperimentStatus.FAILED else ""
        experiment.finished_at = timezone.now()
        experiment.save(update_fields=["status", "error_message", "finished_at"])


# --- In the background, in a worker -------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process, on its own thread, for the experiments it replays; a
    request's own loop (or a sync view's thread) ends long before the experiment does."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(
                target=_loop.run_forever, name="rtdash-experiments", daemon=True
            ).start()
        return _loop


def start_in_background(experiment_id: int) -> concurrent.futures.Future:
    future = asyncio.run_coroutine_threadsafe(run_experiment(experiment_id), _background_loop())
    LIVE[experiment_id] = future

    def forget(done: concurrent.futures.Future) -> None:
        LIVE.pop(experiment_id, None)
        if not done.cancelled() and done.exception() is not None:
            logger.error("Experiment %s failed", experiment_id, exc_info=done.exception())

    future.add_done_callback(forget)
    return future


def request_cancel(experiment: Experiment) -> None:
    """Stop: the worker replaying it sees the flag within CANCEL_POLL_SECONDS."""
    Experiment.objects.filter(pk=experiment.pk).update(cancel_requested=True)


# --- A worker that died -------------------------------------------------------------------


def reap_stale_experiments(stale_after: float | None = None) -> list[int]:
    """End experiments whose worker stopped stamping them: clearly ended, never stuck running.

    Trials whose run was started keep it (the run reaper ends the run itself); the others
    are skipped with the reason.
    """
    if stale_after is None:
        stale_after = settings.RTDASH_REAPER_STALE_SECONDS
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    stale = Experiment.objects.filter(status=ExperimentStatus.RUNNING, heartbeat_at__lt=cutoff)
    reaped = []
    for experiment_id in stale.exclude(pk__in=list(LIVE)).values_list("pk", flat=True):
        with transaction.atomic():
            trials = Trial.objects.filter(
                variant__experiment_id=experiment_id,
                status__in=[TrialStatus.PENDING, TrialStatus.RUNNING],
            )
            trials.filter(run__isnull=False).update(status=TrialStatus.DONE)
            message = "The worker replaying this experiment stopped before this case ran."
            trials.update(
                status=TrialStatus.SKIPPED, error_code="worker_lost", error_message=message
            )
            Experiment.objects.filter(pk=experiment_id, status=ExperimentStatus.RUNNING).update(
                status=ExperimentStatus.FAILED,
                finished_at=timezone.now(),
                error_message="The worker replaying this experiment stopped (it was killed or "
                "lost); the cases it had not run are marked as such.",
            )
        reaped.append(experiment_id)
    if reaped:
        logger.warning("Ended %d experiment(s) whose worker stopped: %s", len(reaped), reaped)
    return reaped
