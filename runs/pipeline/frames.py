"""One writer for the frames of every run a process is reading.

Each run's `EventWriter` (runs.pipeline.reader) collects frames and hands a batch here every
EVENT_BATCH_SECONDS. Batches that arrive while a write is in flight wait and go together in the
next one, so a worker writes frames in one transaction at a time, however many runs it reads:
50 playground streams made 200 commits a second when each run wrote its own, and the worker's
one database thread, busy with them, held up everything else (see bench/relay.py).

A run's batches are written in the order they were handed in. If a combined write fails, each
run's batches are written on their own, so one bad run (deleted mid-stream, say) cannot cost
the others their frames.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from runs.core import sync_thread
from runs.core.loops import PerLoop
from runs.models import RunEvent
from runs.pipeline.recording import FrameRows, save_frames

logger = logging.getLogger(__name__)


@dataclass
class _Batch:
    run_id: int
    rows: FrameRows
    done: asyncio.Future = field(repr=False)


class FrameStore:
    def __init__(self) -> None:
        self._waiting: list[_Batch] = []
        self._writing: asyncio.Task | None = None

    def write(self, run_id: int, rows: FrameRows) -> asyncio.Future:
        """Queue a run's batch; the future is done once it is committed."""
        batch = _Batch(run_id, rows, asyncio.get_running_loop().create_future())
        self._waiting.append(batch)
        if self._writing is None or self._writing.done():
            self._writing = asyncio.ensure_future(self._write_waiting())
        return batch.done

    async def _write_waiting(self) -> None:
        while self._waiting:
            batches, self._waiting = self._waiting, []
            by_run = _group(batches)
            try:
                await sync_thread.call(save_frames, _rows(by_run))
            except Exception as error:
                if len(by_run) == 1:
                    _settle(batches, error)
                else:
                    logger.warning("Writing the frames of %d runs failed; run by run.", len(by_run))
                    await self._write_run_by_run(by_run)
            else:
                _settle(batches)

    async def _write_run_by_run(self, by_run: dict[int, list[_Batch]]) -> None:
        for run_id, batches in by_run.items():
            try:
                await sync_thread.call(save_frames, _rows({run_id: batches}))
            except Exception as error:
                _settle(batches, error)
            else:
                _settle(batches)


def _group(batches: list[_Batch]) -> dict[int, list[_Batch]]:
    """Batches by run, each run's in the order they came."""
    grouped: dict[int, list[_Batch]] = {}
    for batch in batches:
        grouped.setdefault(batch.run_id, []).append(batch)
    return grouped


def _rows(by_run: dict[int, list[_Batch]]) -> list[tuple[int, FrameRows]]:
    return [
        (run_id, [row for batch in batches for row in batch.rows])
        for run_id, batches in by_run.items()
    ]


def _settle(batches: list[_Batch], error: Exception | None = None) -> None:
    for batch in batches:
        if error is None:
            batch.done.set_result(None)
        else:
            batch.done.set_exception(error)


# One store per event loop (runs.core.loops says why).
_STORES = PerLoop(FrameStore)


def frame_store() -> FrameStore:
    return _STORES.get()


def stored_payloads(run_ids: Iterable[int], events: Iterable[str]) -> Iterator[tuple[int, dict]]:
    """The stored frames of these runs and event names, in order: (run id, JSON payload).

    Frames whose data is not a JSON object are skipped: RunTools promises nothing about them.
    """
    frames = (
        RunEvent.objects.filter(run_id__in=list(run_ids), event__in=list(events))
        .order_by("run_id", "sequence")
        .values_list("run_id", "data")
    )
    for run_id, data in frames.iterator(chunk_size=1000):
        try:
            payload = json.loads(data)
        except ValueError:
            continue
        if isinstance(payload, dict):
            yield run_id, payload
