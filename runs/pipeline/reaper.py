"""Nothing stays `running` forever: heartbeats for live readers, and a reaper for dead ones.

Every worker runs one maintenance thread (started by rtdash/asgi.py): every
HEARTBEAT_SECONDS it stamps the runs its readers are reading, and every reaper interval it
ends runs whose heartbeat has gone stale — their reader died with its worker (kill -9, a lost
machine) — as `interrupted`, through the same finish step as every other run, keeping their
frames and whatever usage their frames carried.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from runs.experiments.runner import reap_stale_experiments
from runs.models import Run, RunEvent, RunStatus
from runs.operations.delivery import start_alert_loop
from runs.pipeline.follow import follow_due_runs
from runs.pipeline.recording import RunOutcome, finish_run

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10


def stamp_heartbeats(run_ids: list[int]) -> None:
    if run_ids:
        Run.objects.filter(pk__in=run_ids, status=RunStatus.RUNNING).update(
            heartbeat_at=timezone.now()
        )


def _partial_outcome(run: Run) -> RunOutcome:
    """What the stored frames say about a run whose reader is gone."""
    outcome = RunOutcome()
    events = RunEvent.objects.filter(run=run).order_by("sequence")
    outcome.frame_count = events.count()
    first = events.only("created_at").first()
    if first is not None:
        outcome.first_byte_at = first.created_at
        # Frames are stored only from a stream RunTools answered 200: the run was taken.
        outcome.http_status = 200
    # The last frame that carried usage, as for a live run.
    for data in (
        events.filter(data__contains='"usage"')
        .order_by("-sequence")
        .values_list("data", flat=True)[:1]
    ):
        try:
            payload = json.loads(data)
        except ValueError:
            continue
        if isinstance(payload, dict):
            outcome.take_ids(payload)
            if isinstance(payload.get("usage"), dict):
                outcome.usage = payload["usage"]
    return _lost(outcome)


def _lost(outcome: RunOutcome) -> RunOutcome:
    outcome.fail(
        "reader_lost",
        "The worker reading this run stopped (it was killed or lost); the run was ended by "
        "the reaper with what had been stored.",
        RunStatus.INTERRUPTED,
    )
    return outcome


def reap_stale_runs(stale_after: float | None = None) -> list[int]:
    """End every running run whose reader has not stamped it for `stale_after` seconds."""
    stale_after = stale_after if stale_after is not None else settings.RTDASH_REAPER_STALE_SECONDS
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    stale = Run.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=cutoff)
    reaped = []
    for run in stale.only("pk", "team_id").iterator():
        try:
            finish_run(run.pk, _partial_outcome(run))
        except Exception:
            # What its frames say could not be recorded (a bug to fix, in the log): the run
            # still ends, so it neither stays `running` nor stops every later round here.
            logger.exception("Reaping run %s with its frames failed; ending it without", run.pk)
            finish_run(run.pk, _lost(RunOutcome()))
        reaped.append(run.pk)
    if reaped:
        logger.warning("Reaped %d run(s) whose reader stopped: %s", len(reaped), reaped)
    return reaped


class Maintenance(threading.Thread):
    """The per-worker thread: heartbeats often, reaping now and then."""

    def __init__(self, live_run_ids, interval: float) -> None:
        super().__init__(name="rtdash-maintenance", daemon=True)
        self.live_run_ids = live_run_ids
        self.interval = interval
        self.stopping = threading.Event()
        self.next_reap = 0.0

    def run(self) -> None:
        while not self.stopping.is_set():
            self.one_round()
            self.stopping.wait(HEARTBEAT_SECONDS)

    def one_round(self) -> None:
        try:
            stamp_heartbeats(list(self.live_run_ids()))
            if time.monotonic() >= self.next_reap:
                reap_stale_runs()
                reap_stale_experiments()
                follow_due_runs(seconds=HEARTBEAT_SECONDS * 2)
                self.next_reap = time.monotonic() + self.interval
        except Exception:
            # A database hiccup must not kill the thread; it tries again next round.
            logger.exception("rtdash maintenance round failed")
        finally:
            # Hand the connection back (to the pool, on PostgreSQL) while the thread sleeps:
            # a worker's pool is small and requests need every slot.
            connection.close()


_started: Maintenance | None = None


def start_maintenance() -> Maintenance | None:
    """Start this worker's maintenance thread once (no-op when the interval is 0)."""
    global _started
    if _started is not None or settings.RTDASH_REAPER_INTERVAL <= 0:
        return _started
    from runs.pipeline.reader import IN_FLIGHT

    start_alert_loop()  # alert rules are evaluated on a thread of their own (runs.operations)
    _started = Maintenance(lambda: tuple(IN_FLIGHT), settings.RTDASH_REAPER_INTERVAL)
    _started.start()
    return _started
