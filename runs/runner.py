"""The reading side of a run's one path, shared by the gateway and the playground.

One `RunReader` per run owns the upstream response. Bytes go to the run's sinks (the gateway's
client, the playground's channel group) as they arrive; the same bytes go through the SSE
parser into batched RunEvent writes and into the RunOutcome. When the upstream ends — or the
run is stopped, times out or breaks — the reader finishes the run through
`recording.finish_run`, exactly once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from runs.models import RunStatus
from runs.recording import RunOutcome, finish_run, save_events
from runs.sse import Frame, SSEParser
from runs.upstream import translate

logger = logging.getLogger(__name__)

# Frames are written in batches: never one database write per frame on the hot path.
EVENT_BATCH_SIZE = 500
EVENT_BATCH_SECONDS = 0.25

COMPLETION_EVENTS = frozenset({"run_completed"})
DELTA_EVENTS = frozenset({"assistant_message_delta"})

# Readers running in this process, by run id, so Stop can find them.
READERS: dict[int, RunReader] = {}


def disconnect_frame(message: str) -> bytes:
    """The frame a client gets when the upstream stream dies before its final frame."""
    payload = {"type": "error", "error": {"code": "upstream_disconnected", "message": message}}
    return b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n"


class Sink:
    """Where a run's stream goes besides the database. Subclasses override what they need."""

    async def chunk(self, data: bytes) -> None:
        """Raw upstream bytes, unchanged, in order."""

    async def frames(self, frames: list[tuple[int, Frame]]) -> None:
        """Parsed frames with their sequence numbers."""

    async def end(self, outcome: RunOutcome, injected: bytes | None) -> None:
        """The run is over; `injected` is a frame rtdash adds (a cut stream's error frame)."""


class EventWriter:
    """Buffers frames and writes them in order, one batch in flight at a time."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.next_sequence = 1
        self._pending: list[tuple[int, str, str, object]] = []
        self._oldest = 0.0
        self._last_write: asyncio.Task | None = None

    def add(self, frame: Frame) -> int:
        sequence = self.next_sequence
        self.next_sequence += 1
        if not self._pending:
            self._oldest = time.monotonic()
        self._pending.append((sequence, frame.event, frame.data, timezone.now()))
        return sequence

    def maybe_flush(self) -> None:
        if len(self._pending) >= EVENT_BATCH_SIZE or (
            self._pending and time.monotonic() - self._oldest >= EVENT_BATCH_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self._last_write = asyncio.ensure_future(self._write(batch, self._last_write))

    async def _write(self, batch: list, previous: asyncio.Task | None) -> None:
        if previous is not None:
            await previous
        await sync_to_async(save_events)(self.run_id, batch)

    async def close(self) -> None:
        self.flush()
        if self._last_write is not None:
            await self._last_write


class RunReader:
    def __init__(self, run_id: int, response: httpx.Response, sinks: list[Sink]) -> None:
        self.run_id = run_id
        self.response = response
        self.sinks = sinks
        self.outcome = RunOutcome(http_status=response.status_code)
        headers = response.headers
        self.outcome.take_ids(
            {"runId": headers.get("x-run-id", ""), "threadId": headers.get("x-thread-id", "")}
        )
        self.writer = EventWriter(run_id)
        self.parser = SSEParser()
        self.saw_final_frame = False
        self.stop_requested = False
        self._deltas: list[str] = []
        self._last_message: str | None = None
        self.task: asyncio.Task | None = None
        self.finished = asyncio.Event()
        self.on_finish: list[Callable[[], Awaitable[None]]] = []

    def start(self) -> asyncio.Task:
        READERS[self.run_id] = self
        self.task = asyncio.ensure_future(self._read())
        return self.task

    def stop(self) -> None:
        """Stop reading: the upstream request is cancelled and the run ends `cancelled`."""
        self.stop_requested = True
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _read(self) -> None:
        started = time.perf_counter()
        injected: bytes | None = None
        try:
            async with asyncio.timeout(settings.RTDASH_MAX_RUN_SECONDS):
                async for chunk in self.response.aiter_raw():
                    await self._take(chunk)
            self._observe_all(self.parser.flush())
            if not self.saw_final_frame and not self.outcome.status:
                message = "The RunTools stream ended before its final frame."
                self.outcome.fail("upstream_disconnected", message, RunStatus.INTERRUPTED)
                injected = disconnect_frame(message)
        except asyncio.CancelledError:
            if not self.stop_requested:
                # The process is shutting down: end the run honestly, then let it stop.
                message = "rtdash stopped reading this run (worker shutting down)."
                self.outcome.fail("reader_stopped", message, RunStatus.INTERRUPTED)
                raise
            self.outcome.fail("cancelled", "Stopped before the run finished.", RunStatus.CANCELLED)
        except TimeoutError:
            message = f"The run passed the {settings.RTDASH_MAX_RUN_SECONDS} s maximum duration."
            self.outcome.fail("max_duration", message, RunStatus.INTERRUPTED)
            injected = disconnect_frame(message)
        except httpx.HTTPError as error:
            problem = translate(error)
            status = RunStatus.INTERRUPTED if self.outcome.frame_count else RunStatus.FAILED
            self.outcome.fail(problem.code, problem.message, status)
            injected = disconnect_frame(problem.message)
        finally:
            await self.response.aclose()
            self.outcome.upstream_ms = (time.perf_counter() - started) * 1000
            await self._finish(injected)

    async def _take(self, chunk: bytes) -> None:
        if self.outcome.first_byte_at is None:
            self.outcome.first_byte_at = timezone.now()
        for sink in self.sinks:
            await sink.chunk(chunk)
        # Let the sinks send this chunk before spending CPU on parsing it: when the upstream
        # has more data ready, the read loop would otherwise never give up the event loop.
        await asyncio.sleep(0)
        frames = self.parser.feed(chunk)
        if frames:
            numbered = self._observe_all(frames)
            for sink in self.sinks:
                await sink.frames(numbered)
        self.writer.maybe_flush()

    def _observe_all(self, frames: list[Frame]) -> list[tuple[int, Frame]]:
        numbered = []
        for frame in frames:
            numbered.append((self.writer.add(frame), frame))
            self._observe(frame)
        self.outcome.frame_count += len(frames)
        return numbered

    def _observe(self, frame: Frame) -> None:
        """Update the outcome from one frame, parsing JSON only where it can matter."""
        if frame.is_done:
            self.saw_final_frame = True
            return
        event = frame.event
        if event in DELTA_EVENTS:
            payload = frame.json()
            if isinstance(payload, dict) and isinstance(payload.get("delta"), str):
                self._deltas.append(payload["delta"])
            return
        if (
            event not in COMPLETION_EVENTS
            and event not in ("run_started", "error")
            and (event != "assistant_message" and '"usage"' not in frame.data)
        ):
            return
        payload = frame.json()
        if not isinstance(payload, dict):
            return
        if event == "error":
            error = payload.get("error") if isinstance(payload.get("error"), dict) else payload
            code = error.get("code") if isinstance(error.get("code"), str) else "upstream_error"
            message = error.get("message") if isinstance(error.get("message"), str) else ""
            self.outcome.fail(code, message or "RunTools reported an error.")
            self.saw_final_frame = True
        elif event in COMPLETION_EVENTS:
            self.outcome.take_result(payload)
            if not self.outcome.status:
                self.outcome.status = RunStatus.COMPLETED
            self.saw_final_frame = True
        elif event == "assistant_message":
            if isinstance(payload.get("content"), str):
                self._last_message = payload["content"]
        else:
            self.outcome.take_ids(payload)
            if isinstance(payload.get("usage"), dict):
                self.outcome.usage = payload["usage"]

    async def _finish(self, injected: bytes | None) -> None:
        if self.outcome.result is None:
            # Not every runtime repeats the answer in its final frame.
            self.outcome.result = self._last_message or "".join(self._deltas) or None
        # The client has everything once the upstream has ended: let it go before the
        # database work, which is the run's record, not the client's concern.
        for sink in self.sinks:
            await sink.end(self.outcome, injected)
        try:
            await self.writer.close()
            await sync_to_async(finish_run)(self.run_id, self.outcome)
        finally:
            READERS.pop(self.run_id, None)
            self.finished.set()
            for callback in self.on_finish:
                await callback()
