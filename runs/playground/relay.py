"""The playground's side of a run's one path: frames to a channel-layer group, and Stop.

One `RunReader` per run (runs.pipeline.reader) reads the upstream. A `RelaySink` on it passes every
parsed frame, numbered by sequence, to the sockets watching the run (runs.playground.consumers):
- sockets in the reader's own process are handed each message directly (`watch`), without
  the channel layer: with Redis, a frame would otherwise go out to Redis and come back, and
  that round trip cost more of the worker's time per frame than anything else;
- sockets on other workers are in the run's group `run.<id>`. Each one asks the reader to
  catch up when it starts following (below), so the sink publishes frames to the group once
  somebody has asked, and not at all for a run nobody watches from elsewhere.
The sink also listens on the run's control group `run.<id>.control` for what any worker may
ask of the reader:

- catch-up: a socket that joins a run in progress joins the group, replays the frames stored
  in the database, then asks for the frames after the last one it read. Frames are stored in
  batches (every <= 0.25 s), so the newest exist only in the reader's memory: the sink keeps
  each frame until the writer has committed it and answers with what it holds. Anything
  older than what it holds is in the database. With sequence numbers to drop duplicates,
  a late joiner gets every frame exactly once, in order.
- stop: cancel the upstream request. `request_stop` also sets `Run.cancel_requested`, which
  the sink polls every CANCEL_POLL_SECONDS: channel layers deliver at most once, the flag is
  the backstop (and the record that someone pressed Stop).

The relay never holds the run up: a channel layer that fails (Redis down) costs the live view,
not the run. The sink logs it once per run, keeps reading and recording, and, if it could not
join its control group, tries again at every stop-flag poll so that sockets coming back after
the outage can catch up from it; Stop goes by the flag meanwhile.

When the run is finished — final status and usage committed, every frame stored — the sink
sends `run.finished` with the last sequence and the recorded run as the browser shows it;
sockets read anything they have not sent yet (the parser finds a last frame without its blank
line only at the very end) from the database, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from datetime import UTC, datetime
from typing import Protocol

from asgiref.sync import sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from redis.exceptions import RedisError

from runs.core.loops import PerLoop
from runs.core.sse import Frame
from runs.models import Run, RunStatus
from runs.operations.metrics import count_relayed_frames
from runs.pipeline.reader import READERS, RunReader, Sink
from runs.playground.run_summary import SUMMARY_FIELDS, browser_state

logger = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 2.0
# Frames for other workers' sockets are published by a task of their own, in order, so the
# reader never waits for the layer. A publish that takes longer than this, or a backlog longer
# than this, stops publishing (the sockets then catch up, see RelaySink._publish).
PUBLISH_TIMEOUT_SECONDS = 5.0
MAX_UNPUBLISHED_MESSAGES = 100
# What a channel layer raises when it cannot take or give a message (a full channel, Redis
# down or out of connections). The relay is best effort: the run is read and recorded
# whatever happens to it, and watching sockets catch up from the database.
LAYER_ERRORS = (ChannelFull, RedisError, OSError)
# What counts as the first token for "time to first token".
FIRST_TOKEN_EVENTS = frozenset({"assistant_message_delta", "assistant_thinking_delta"})

# A frame on the wire between workers and to the browser: [sequence, event, data].
WireFrame = list


class LocalViewer(Protocol):
    """A socket in the reader's process (runs.playground.consumers.RunConsumer)."""

    def deliver(self, message: dict) -> None:
        """Take a message for the run as if from the channel layer; must not block."""


def frames_text(frames: list[WireFrame]) -> str:
    """The message a socket sends the browser with these frames (docs/playground.md)."""
    return json.dumps({"type": "frames", "frames": frames})


def local_sink(run_id: int) -> RelaySink | None:
    """The relay of a run read in this process, if it is still relaying."""
    reader = READERS.get(run_id)
    if reader is None:
        return None
    for sink in reader.sinks:
        if isinstance(sink, RelaySink) and not sink.closed:
            return sink
    return None


def run_group(run_id: int) -> str:
    """Where a run's frames go. Group names must match ^[a-zA-Z0-9._-]{1,100}$."""
    return f"run.{int(run_id)}"


def control_group(run_id: int) -> str:
    """Where requests for a run's reader go (catch-up, stop), from any worker."""
    return f"run.{int(run_id)}.control"


# The ORM helpers below are plain functions: the reader side calls them with sync_to_async,
# like the runner's own writes, and the playground's Stop view calls them directly (a
# database_sync_to_async hop would close the view's own connection on the way).


def _cancel_requested(run_ids: list[int]) -> set[int]:
    """Which of these runs someone asked to stop."""
    flagged = Run.objects.filter(pk__in=run_ids, cancel_requested=True)
    return set(flagged.values_list("pk", flat=True))


def mark_cancel_requested(run_id: int) -> bool:
    """Record that Stop was pressed; False when the run was no longer running."""
    return Run.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(cancel_requested=True) > 0


async def signal_stop(run_id: int) -> None:
    """Tell the run's reader to stop, in this process or through the channel layer."""
    reader = READERS.get(run_id)
    if reader is not None:
        reader.stop()
        return
    try:
        await get_channel_layer().group_send(control_group(run_id), {"type": "run.stop"})
    except LAYER_ERRORS:
        # The flag set before this is the backstop: the reader sees it at its next poll.
        logger.warning("run %s: Stop goes by the flag, the channel layer failed", run_id)


async def request_stop(run_id: int) -> bool:
    """Stop a run wherever its reader is; False when the run was no longer running.

    The caller has checked that the run belongs to the user's team. The flag is set first, so
    a reader that misses the channel message still stops at its next poll.
    """
    if not await sync_to_async(mark_cancel_requested)(run_id):
        return False
    await signal_stop(run_id)
    return True


class RelaySink(Sink):
    """Relays a run's frames to its group and answers catch-up and stop requests.

    Pass it to `runs.pipeline.start.launch`, then call `attach` with the reader `launch` returned
    before awaiting anything else (the reader has not read a byte until the caller yields).
    """

    wants_frames = True

    def __init__(self, starter: LocalViewer | None = None) -> None:
        self.layer = get_channel_layer()
        # This process's sockets following the run. The socket that started it is one from
        # the start, so it hears the run from its first frame without catching up.
        self.viewers: set[LocalViewer] = set() if starter is None else {starter}
        # Whether a socket on another worker has asked for this run (see the module's doc).
        self.publishing = False
        self.reader: RunReader | None = None
        self.run_id = 0
        # Frames relayed but perhaps not yet committed, oldest first.
        self.unstored: deque[WireFrame] = deque()
        self.relayed = 0
        self.first_token_at: float | None = None  # unix time
        self.channel = ""
        self.closed = False
        self.layer_failed = False
        # Whether this sink hears catch-up and stop requests (not while the layer is down).
        self.listening = False
        self._tasks: list[asyncio.Task] = []
        # Messages for other workers' sockets not yet taken by the layer, oldest first.
        self._unpublished: deque[dict] = deque()
        self._publisher: asyncio.Task | None = None

    async def attach(self, reader: RunReader) -> None:
        self.reader, self.run_id = reader, reader.run_id
        reader.on_finish.append(self._finished)
        _stop_flags().watch(self)
        await self._join_control_group()

    async def _join_control_group(self) -> None:
        """Listen for requests from other workers. Retried by the stop-flag poll while the
        layer is down, so sockets that come back after an outage can catch up from the reader."""
        try:
            if not self.channel:
                self.channel = await self.layer.new_channel("relay.")
            await self.layer.group_add(control_group(self.run_id), self.channel)
        except LAYER_ERRORS:
            self._layer_failed("join its control group")
            return  # Stop still works through the flag
        if self.closed:
            # The run ended while we were joining (a very short stream).
            await self._quietly(self.layer.group_discard(control_group(self.run_id), self.channel))
            return
        self.listening = True
        self._tasks.append(asyncio.ensure_future(self._listen()))

    def _layer_failed(self, what: str) -> None:
        # Once per run: a Redis outage would otherwise log every frame of every run.
        if not self.layer_failed:
            self.layer_failed = True
            logger.warning(
                "run %s: the channel layer failed to %s", self.run_id, what, exc_info=True
            )

    async def _quietly(self, operation, what: str = "deliver a message") -> None:
        try:
            await operation
        except LAYER_ERRORS:
            self._layer_failed(what)

    # --- this process's sockets ------------------------------------------------------------

    def watch(self, viewer: LocalViewer) -> bool:
        """Hand the run's messages to `viewer` from now on; False once the run has ended (the
        viewer then reads the outcome from the database)."""
        if self.closed:
            return False
        self.viewers.add(viewer)
        return True

    def unwatch(self, viewer: LocalViewer) -> None:
        self.viewers.discard(viewer)

    def _hand_out(self, message: dict) -> None:
        # Read-only from here on: every viewer gets the same message.
        for viewer in list(self.viewers):
            viewer.deliver(message)

    # --- the reader's side ------------------------------------------------------------------

    async def frames(self, frames: list[tuple[int, Frame]]) -> None:
        stored = self.reader.writer.stored_through if self.reader is not None else 0
        while self.unstored and self.unstored[0][0] <= stored:
            self.unstored.popleft()
        wire = [[sequence, frame.event, frame.data] for sequence, frame in frames]
        if self.first_token_at is None and any(f.event in FIRST_TOKEN_EVENTS for _, f in frames):
            self.first_token_at = time.time()
        self.unstored.extend(wire)
        count_relayed_frames(len(wire))
        self.relayed = wire[-1][0]
        message = {"type": "run.frames", "run": self.run_id, "frames": wire}
        if self.viewers:
            # Encoded once for every socket here: one that has sent all before these sends
            # the text as it is.
            self._hand_out({**message, "text": frames_text(wire)})
        if self.publishing:
            self._queue_publish(message)

    def _queue_publish(self, message: dict) -> None:
        """Frames for sockets on other workers, published in order by a task of their own.

        The reader used to wait for each publish, at most a second: under load the layer's
        one connection per shard was often that busy, publishing stopped, and the watchers,
        hearing nothing, caught up only when their watchdog noticed the silence, 5-10 s later
        (bench/load.py --watchers)."""
        if len(self._unpublished) >= MAX_UNPUBLISHED_MESSAGES:
            self._stop_publishing("keep up with the frames")
            return
        self._unpublished.append(message)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.ensure_future(self._publish())

    async def _publish(self) -> None:
        """On a failure (Redis down, or too slow for too long) publishing stops: those
        sockets see the gap, or the silence, and the catch-up they then ask for, once the
        layer carries it, turns publishing on again."""
        while self._unpublished and self.publishing:
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                    await self.layer.group_send(run_group(self.run_id), self._unpublished[0])
            except (*LAYER_ERRORS, TimeoutError):
                self._stop_publishing("publish frames")
                return
            if self._unpublished:
                self._unpublished.popleft()

    def _stop_publishing(self, what: str) -> None:
        self.publishing = False
        self._unpublished.clear()
        self._layer_failed(what)

    async def _finished(self) -> None:
        """Called by the reader once the run's record is complete."""
        last = self.reader.writer.next_sequence - 1 if self.reader is not None else 0
        finished = {"type": "run.finished", "run": self.run_id, "last": last}
        if self.first_token_at is not None:
            finished["firstTokenAt"] = self.first_token_at
        try:
            state = self._recorded_state()
        except Exception:
            # The sockets read the row instead; the relay must close whatever happens here.
            logger.exception("Run %s: its outcome could not be built for its sockets", self.run_id)
            state = None
        if state is not None:
            finished["state"] = state
        # This process's sockets first, in the same step as closing: a socket that finds the
        # relay closed knows `run.finished` is already in its inbox, whatever the layer does.
        self.closed = True
        self._hand_out(finished)
        self.viewers.clear()
        self.unstored.clear()
        if self._publisher is not None:
            # Other workers' sockets get the frames still to publish before `run.finished`.
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.channel:
            discard = self.layer.group_discard(control_group(self.run_id), self.channel)
            await self._quietly(discard, "leave its control group")
        # Always: a socket elsewhere may have joined the group without having asked yet.
        await self._quietly(self.layer.group_send(run_group(self.run_id), finished))

    def _recorded_state(self) -> dict | None:
        """The finished run for the browser, built once here from the row finishing wrote:
        otherwise every socket reads it back from the database, and when many runs end
        together those reads held up the frames of the runs still streaming."""
        run = self.reader.record if self.reader is not None else None
        if run is None or run.get_deferred_fields() & SUMMARY_FIELDS:
            return None  # it was ended elsewhere (the reaper): the sockets read the row
        first_token = None
        if self.first_token_at is not None:
            first_token = datetime.fromtimestamp(self.first_token_at, UTC)
        return browser_state(run, first_token)

    # --- requests from any worker -----------------------------------------------------------

    def catch_up(self, after: int) -> dict:
        """Frames after `after` that this reader holds; older ones are in the database."""
        return {
            "type": "run.catchup.reply",
            "run": self.run_id,
            "frames": [frame for frame in self.unstored if frame[0] > after],
            "through": self.relayed,
        }

    async def _listen(self) -> None:
        # Never cancelled mid-wait except at the end: with channels_redis, a cancelled receive
        # can swallow a message meant for another consumer of this process.
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except LAYER_ERRORS:
                self._layer_failed("receive a request")
                await asyncio.sleep(1)
                continue
            kind = message.get("type")
            if kind == "run.stop":
                self.reader.stop()
            elif kind == "run.catchup":
                reply_to, after = message.get("reply_to"), message.get("after")
                if isinstance(reply_to, str) and isinstance(after, int):
                    # A socket on another worker follows the run: its live frames go through
                    # the group from now on, and the reply covers everything before.
                    self.publishing = True
                    # If the answer is lost, the socket asks again.
                    await self._quietly(self.layer.send(reply_to, self.catch_up(after)))

    async def _flag_checked(self, flagged: bool) -> None:
        """The stop-flag poll's answer for this run (see _StopFlags)."""
        if flagged:
            self.reader.stop()
        elif not self.listening and not self.closed:
            await self._join_control_group()


class _StopFlags:
    """One query every CANCEL_POLL_SECONDS for the stop flags of all of a process's relayed
    runs, rather than one per run: 50 streams made 25 queries a second on the database thread
    that also stores their frames."""

    def __init__(self) -> None:
        self.sinks: set[RelaySink] = set()
        self.task: asyncio.Task | None = None

    def watch(self, sink: RelaySink) -> None:
        self.sinks.add(sink)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        while self.sinks:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            self.sinks = {sink for sink in self.sinks if not sink.closed}
            sinks = [sink for sink in self.sinks if not sink.reader.stop_requested]
            if not sinks:
                continue
            try:
                flagged = await sync_to_async(_cancel_requested)([sink.run_id for sink in sinks])
            except Exception:
                # The database is unreachable for now: Stop still arrives by the channel layer.
                logger.warning("Could not read the runs' stop flags.", exc_info=True)
                continue
            for sink in sinks:
                await sink._flag_checked(sink.run_id in flagged)


# One poller per event loop, like runs.pipeline.frames's writer.
_POLLERS = PerLoop(_StopFlags)


def _stop_flags() -> _StopFlags:
    return _POLLERS.get()
