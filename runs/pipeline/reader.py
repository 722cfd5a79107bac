"""The reading side of a run's one path, shared by the gateway and the playground.

One `RunReader` per run owns the upstream response. Bytes go to the run's sinks (the gateway's
client, the playground's channel group) as they arrive; the same bytes go through the SSE
parser into batched RunEvent writes and into the RunOutcome. When the upstream ends — or the
run is stopped, times out or breaks — the reader finishes the run through
`recording.finish_run`, exactly once.

Parsing costs CPU that the relay needs when frames come in a burst, so it is lazy unless a
sink wants frames (the playground does): chunks are parsed when the stream pauses, when enough
has piled up, or at the end, after the client has its last byte. Profiled in-process on a
10,000-delta stream: parsing and observing ~35 ms, storing ~45 ms, relaying ~15 ms.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import httpx
from django.conf import settings
from django.utils import timezone

from runs.core import sync_thread
from runs.core.sse import Frame, SSEParser
from runs.core.upstream import translate
from runs.models import Run, RunStatus
from runs.pipeline.frames import frame_store
from runs.pipeline.recording import RunOutcome, finish_run

logger = logging.getLogger(__name__)

# Frames are written in batches: never one database write per frame on the hot path.
EVENT_BATCH_SIZE = 1000
EVENT_BATCH_SECONDS = 0.25
# Lazy parsing: parse once the stream has paused this long, or this much has piled up, and
# never let a live stream go longer than PARSE_MAX_DELAY unparsed.
PARSE_IDLE_SECONDS = 0.02
PARSE_MAX_DELAY = 0.25
PARSE_BACKLOG_BYTES = 4 * 1024 * 1024
# After the stream's last byte is handed to the server, this long for it to reach the client
# before the backlog is parsed (see RunReader._parse_backlog).
BACKLOG_FIRST_YIELD_SECONDS = 0.001
# At the end of a stream, the final frame is looked for in this much of its tail first.
TAIL_BYTES = 64 * 1024
# After a stream's first chunk and after its last, the reader yields up to this many turns of
# the event loop for the sinks' consumers to take what they hold (RunReader._let_sinks_send):
# the gateway's response takes two or three to start. A consumer that never comes (a client
# gone before its response started) costs no more than these turns.
SINK_TURNS = 8

COMPLETION_EVENTS = frozenset({"run_completed"})
DELTA_EVENTS = frozenset({"assistant_message_delta"})
FINAL_EVENTS = COMPLETION_EVENTS | {"error"}

# Readers running in this process, by run id, so Stop can find them.
READERS: dict[int, RunReader] = {}
# Every run this process is still working on (streams being read, JSON calls in flight): the
# maintenance thread stamps their heartbeats so the reaper leaves them alone.
IN_FLIGHT: set[int] = set()


def disconnect_frame(message: str) -> bytes:
    """The frame a client gets when the upstream stream dies before its final frame."""
    payload = {"type": "error", "error": {"code": "upstream_disconnected", "message": message}}
    return b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n"


class Sink:
    """Where a run's stream goes besides the database. Subclasses override what they need."""

    # A sink that wants parsed frames as they arrive makes the reader parse eagerly.
    wants_frames = False

    async def chunk(self, data: bytes) -> None:
        """Raw upstream bytes, unchanged, in order."""

    def holding(self) -> bool:
        """Whether bytes given to `chunk` still wait for the sink's consumer (the gateway's
        response, sending them to its client)."""
        return False

    async def frames(self, frames: list[tuple[int, Frame]]) -> None:
        """Parsed frames with their sequence numbers (only called when `wants_frames`)."""

    async def end(self, outcome: RunOutcome, injected: bytes | None) -> None:
        """The upstream is over; `injected` is a frame rtdash adds (a cut stream's error)."""


class EventWriter:
    """Buffers frames and writes them in order, one batch in flight at a time."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.next_sequence = 1
        # Every frame up to this sequence is committed. The playground's relay
        # (runs.playground.relay) keeps frames in memory until then, to answer a late
        # joiner's catch-up request.
        self.stored_through = 0
        self._pending: list[tuple[int, str, str, datetime]] = []
        self._oldest = 0.0
        self._last_write: asyncio.Future | None = None
        self._flush_timer: asyncio.TimerHandle | None = None

    def add(self, frame: Frame, at: datetime) -> int:
        sequence = self.next_sequence
        self.next_sequence += 1
        if not self._pending:
            self._oldest = time.monotonic()
        self._pending.append((sequence, frame.event, frame.data, at))
        return sequence

    def maybe_flush(self) -> None:
        if not self._pending:
            return
        age = time.monotonic() - self._oldest
        if len(self._pending) >= EVENT_BATCH_SIZE or age >= EVENT_BATCH_SECONDS:
            self.flush()
        elif self._flush_timer is None:
            # Stored within EVENT_BATCH_SECONDS even when the stream now pauses (a long tool
            # call): no chunk may come to flush them, and a crash would lose what the client saw.
            self._flush_timer = asyncio.get_running_loop().call_later(
                EVENT_BATCH_SECONDS - age, self.flush
            )

    def flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        # The store writes a run's batches in order, together with other runs' (one
        # transaction for all of them); a later batch is committed only after this one.
        written = frame_store().write(self.run_id, batch)
        self._last_write = asyncio.ensure_future(self._stored(written, batch[-1][0]))

    async def _stored(self, written: asyncio.Future, last_sequence: int) -> None:
        await written
        self.stored_through = max(self.stored_through, last_sequence)

    async def close(self) -> None:
        self.flush()
        if self._last_write is not None:
            await self._last_write


def _body_chunks(response: httpx.Response):
    """The stream's bytes as the upstream sent them; decoded when it compressed them anyway
    (rtdash asks for them uncompressed), since Content-Encoding is not passed on."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    return response.aiter_raw() if encoding in ("", "identity") else response.aiter_bytes()


def _is_final(frame: Frame) -> bool:
    return frame.is_done or frame.event in FINAL_EVENTS


class RunReader:
    def __init__(self, run_id: int, response: httpx.Response, sinks: list[Sink]) -> None:
        self.run_id = run_id
        self.response = response
        self.sinks = sinks
        self.eager = any(sink.wants_frames for sink in sinks)
        self.outcome = RunOutcome(http_status=response.status_code)
        headers = response.headers
        self.outcome.take_ids(
            {"runId": headers.get("x-run-id", ""), "threadId": headers.get("x-thread-id", "")}
        )
        # When the request went upstream (time.perf_counter), set by runs.pipeline.start: a
        # stream's upstream time runs from there, as a JSON run's does, not from its headers.
        self.sent: float | None = None
        self.writer = EventWriter(run_id)
        self.parser = SSEParser()
        self.saw_final_frame = False
        self.stop_requested = False
        self.finishing = False
        self._unparsed: list[tuple[bytes, datetime]] = []
        self._unparsed_bytes = 0
        self._oldest_unparsed = 0.0
        self._last_chunk_at = 0.0
        self._parse_timer: asyncio.TimerHandle | None = None
        self._delta_data: list[str] = []
        self._last_message: str | None = None
        self.task: asyncio.Task | None = None
        self.finished = asyncio.Event()
        self.on_finish: list[Callable[[], Awaitable[None]]] = []
        # The run as finishing left it, for the on_finish callbacks (None if that failed).
        self.record: Run | None = None

    def start(self) -> asyncio.Task:
        READERS[self.run_id] = self
        IN_FLIGHT.add(self.run_id)
        self.task = asyncio.ensure_future(self._read())
        return self.task

    def stop(self) -> None:
        """Stop reading: the upstream request is cancelled and the run ends `cancelled`."""
        if self.finishing:
            # The upstream has ended and the run is being recorded: a cancel now would cut the
            # final write short and leave the run `running` for the reaper. (A Stop pressed as
            # the stream ends, from the playground or another worker, lands here.)
            return
        self.stop_requested = True
        if self.task is not None and not self.task.done():
            self.task.cancel()

    # --- reading --------------------------------------------------------------------------

    async def _read(self) -> None:
        started = self.sent if self.sent is not None else time.perf_counter()
        injected: bytes | None = None
        try:
            async with asyncio.timeout(settings.RTDASH_MAX_RUN_SECONDS):
                async for chunk in _body_chunks(self.response):
                    await self._take(chunk)
            # The upstream has ended: a Stop from now on finds nothing left to stop, and what
            # is still unparsed waits for the end's examination, not for the idle timer.
            self.finishing = True
            self._cancel_parse_timer()
            # The stream's end is examined (its tail parsed) once the client has its last bytes.
            await self._let_sinks_send()
            injected = self._examine_end()
        except asyncio.CancelledError:
            if self.finishing:
                # The upstream had ended; only the wait for the client was cut short (the
                # process is shutting down): the run ends as its stream did.
                injected = self._examine_end()
                raise
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
            status = RunStatus.INTERRUPTED if self._received_any() else RunStatus.FAILED
            self.outcome.fail(problem.code, problem.message, status)
            injected = disconnect_frame(problem.message)
        except Exception:
            # A bug in rtdash (a sink, the parser): the run must still end, honestly, with the
            # reason on it and the traceback in the log, never as `completed`.
            logger.exception("Reading run %s failed", self.run_id)
            message = "rtdash failed while reading this run; the server log has the details."
            self.outcome.fail("reader_error", message, RunStatus.INTERRUPTED)
            injected = disconnect_frame(message)
        finally:
            self.finishing = True
            # What is left is parsed after the client has its last byte (_finish), not by an
            # idle timer firing while the connection closes.
            self._cancel_parse_timer()
            await self.response.aclose()
            self.outcome.upstream_ms = (time.perf_counter() - started) * 1000
            await self._finish(injected)

    def _examine_end(self) -> bytes | None:
        """At the upstream's end: None when the stream closed with its final frame; else the
        run is interrupted, and this is the frame the client gets to say so."""
        if self._final_frame_seen():
            return None
        message = "The RunTools stream ended before its final frame."
        self.outcome.fail("upstream_disconnected", message, RunStatus.INTERRUPTED)
        return disconnect_frame(message)

    async def _let_sinks_send(self) -> None:
        """Give the event loop to the sinks' consumers while they still hold bytes, for at most
        SINK_TURNS turns. With more data ready the reader would keep the loop to itself: a
        short stream (all of it ready, with its headers) would be read to its end and
        examined in one go, and the gateway's response, still starting in its own task, would
        send its first byte only after that; an eager reader would parse each chunk before
        its client had it."""
        turns = 0
        while turns < SINK_TURNS and any(sink.holding() for sink in self.sinks):
            await asyncio.sleep(0)
            turns += 1

    def _received_any(self) -> bool:
        return self.outcome.frame_count > 0 or bool(self._unparsed)

    async def _take(self, chunk: bytes) -> None:
        now = timezone.now()
        first = self.outcome.first_byte_at is None
        if first:
            self.outcome.first_byte_at = now
        for sink in self.sinks:
            await sink.chunk(chunk)
        if first or self.eager:
            # The sinks send the chunk before the reader reads on (the first) or parses it.
            await self._let_sinks_send()
        if self.eager:
            numbered = self._parse(chunk, now)
            if numbered:
                for sink in self.sinks:
                    await sink.frames(numbered)
            self.writer.maybe_flush()
            return
        arrived = time.monotonic()
        if not self._unparsed:
            self._oldest_unparsed = arrived
        self._unparsed.append((chunk, now))
        self._unparsed_bytes += len(chunk)
        self._last_chunk_at = arrived
        if (
            self._unparsed_bytes >= PARSE_BACKLOG_BYTES
            or arrived - self._oldest_unparsed >= PARSE_MAX_DELAY
        ):
            self._parse_pending()
        elif self._parse_timer is None:
            self._parse_timer = asyncio.get_running_loop().call_later(
                PARSE_IDLE_SECONDS, self._parse_when_idle
            )

    def _parse_when_idle(self) -> None:
        """Parse once the stream pauses: a burst is relayed first and parsed after. One timer
        per pause, moved on while chunks keep coming (not a new timer for every chunk)."""
        self._parse_timer = None
        quiet = time.monotonic() - self._last_chunk_at
        if quiet < PARSE_IDLE_SECONDS:
            self._parse_timer = asyncio.get_running_loop().call_later(
                PARSE_IDLE_SECONDS - quiet, self._parse_when_idle
            )
            return
        self._parse_pending()

    def _cancel_parse_timer(self) -> None:
        if self._parse_timer is not None:
            self._parse_timer.cancel()
            self._parse_timer = None

    def _parse_pending(self) -> None:
        self._cancel_parse_timer()
        pending, self._unparsed, self._unparsed_bytes = self._unparsed, [], 0
        for chunk, at in pending:
            self._parse(chunk, at)
        self.writer.maybe_flush()

    async def _parse_backlog(self) -> None:
        """Parse what is left once the upstream has ended, a chunk at a time.

        The first wait lets the server put the client's last bytes on the wire: daphne
        (Twisted) writes on a later turn of the event loop than the one that sent them, so
        parsing a 10,000-delta backlog in one go held the end of the client's stream back by
        the whole parse. Yielding between chunks keeps the worker's other requests moving.
        """
        if not self._unparsed:
            return
        self._cancel_parse_timer()
        await asyncio.sleep(BACKLOG_FIRST_YIELD_SECONDS)
        while self._unparsed:
            chunk, at = self._unparsed.pop(0)
            self._unparsed_bytes -= len(chunk)
            self._parse(chunk, at)
            self.writer.maybe_flush()
            await asyncio.sleep(0)

    def _parse(self, chunk: bytes, at: datetime) -> list[tuple[int, Frame]]:
        return self._observe_all(self.parser.feed(chunk), at)

    def _final_frame_seen(self) -> bool:
        """At the end of the stream: did it close with a final frame?

        When parsing is behind, the answer is looked for in the stream's tail first, so the
        client is not kept waiting while the whole stream is parsed.
        """
        if self.saw_final_frame and not self._unparsed:
            return True
        if self._unparsed and self._tail_has_final_frame():
            return True
        self._parse_pending()
        self._observe_all(self.parser.flush(), timezone.now())
        return self.saw_final_frame

    def _tail_has_final_frame(self) -> bool:
        tail = b"".join(chunk for chunk, _ in self._unparsed[-64:])[-TAIL_BYTES:]
        tail = tail.replace(b"\r\n", b"\n")
        start = tail.find(b"\n\n")
        # Skip the first, probably partial, frame of the tail; then read the rest.
        probe = SSEParser()
        frames = probe.feed(tail[start + 2 :] if start >= 0 else tail) + probe.flush()
        return any(_is_final(frame) for frame in frames[-3:])

    # --- understanding frames -------------------------------------------------------------

    def _observe_all(self, frames: list[Frame], at: datetime) -> list[tuple[int, Frame]]:
        numbered = [(self.writer.add(frame, at), frame) for frame in frames]
        for frame in frames:
            self._observe(frame)
        self.outcome.frame_count += len(frames)
        return numbered

    def _observe(self, frame: Frame) -> None:
        """Update the outcome from one frame, parsing JSON only where it can matter."""
        if frame.is_done:
            self.saw_final_frame = True
            return
        event = frame.event
        carries_usage = '"usage"' in frame.data
        if event in DELTA_EVENTS:
            # Kept raw: only needed when the final frame does not repeat the answer.
            self._delta_data.append(frame.data)
            if not carries_usage:
                return
        interesting = event in FINAL_EVENTS or event in ("run_started", "assistant_message")
        if not interesting and not carries_usage:
            return
        payload = frame.json()
        if not isinstance(payload, dict):
            return
        # The run's usage is what the last frame carrying a usage object says, whatever the
        # frame (RunTools' contract): a delta, a message or an error may carry it too.
        if isinstance(payload.get("usage"), dict):
            self.outcome.usage = payload["usage"]
        if event in DELTA_EVENTS:
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

    def _streamed_text(self) -> str:
        parts = []
        for data in self._delta_data:
            try:
                payload = json.loads(data)
            except ValueError:
                continue
            if isinstance(payload, dict) and isinstance(payload.get("delta"), str):
                parts.append(payload["delta"])
        return "".join(parts)

    # --- finishing ------------------------------------------------------------------------

    async def _finish(self, injected: bytes | None) -> None:
        # The client has everything once the upstream has ended: let it go before parsing
        # what is left and writing the record, which are the run's business, not the client's.
        for sink in self.sinks:
            await sink.end(self.outcome, injected)
        try:
            await self._parse_backlog()
            self._observe_all(self.parser.flush(), timezone.now())
            if self.outcome.result is None:
                # Not every runtime repeats the answer in its final frame.
                self.outcome.result = self._last_message or self._streamed_text() or None
            await self.writer.close()
            self.record = await sync_thread.call(finish_run, self.run_id, self.outcome)
        finally:
            READERS.pop(self.run_id, None)
            IN_FLIGHT.discard(self.run_id)
            self.finished.set()
            for callback in self.on_finish:
                await callback()
