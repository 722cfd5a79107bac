"""The playground's websocket: start a run, watch it live (from any point), stop it.

Routes (runs/routing.py), one consumer:
- `ws/playground/` — a tab about to start a run: `{"action": "start", "form": {...}}`, the
  playground form's fields as name → value or list of values.
- `ws/runs/<id>/?after=<sequence>` — a tab watching a run: a reload, a teammate, a link.
Both take `{"action": "stop"}`. A socket follows one run at a time; the run does not depend
on it, so closing the tab never stops a run.

Closes with 4401 (not logged in), 4403 (no team, or not the team's run), 4413 (a message over
64 KiB), 4429 (too many messages), 4503 (the channel layer is down: come back later with
?after=). To the browser, JSON:
    {"type": "started", "run", "url"}                    this socket's start made run `run`
    {"type": "run", ...}                                  the run followed (run_summary.summary)
    {"type": "frames", "frames": [[seq, event, data]]}    every frame exactly once, in order
    {"type": "finished", ...}                             the recorded outcome (summary)
    {"type": "invalid", "errors": {field: [message]}}     the form needs fixing
    {"type": "error", "code", "message"}                  refused: role, budget, key, busy
    {"type": "unavailable", "code", "message", "run", "runUrl"}   no live streaming (below)

Following a run: join its group first, so no live frame is missed; replay what the database has;
then ask the reader (runs.playground.relay, on whichever worker) for the frames after that,
holding live frames until the answer comes; then pass live frames on, each sequence once. A gap
in live frames (a full channel drops messages) starts another catch-up. If nobody answers, the
reader is gone: a watchdog looks at the run's row and ends the story from the database. When the
run's reader is in this process, "joining its group" and "asking the reader" are done directly
with its relay (`RelaySink.watch`, `catch_up`), and its messages come into the socket's own
inbox rather than through the channel layer; everything else is the same.

When the channel layer fails (Redis down), a run still starts, is read and is recorded (its
reader needs only the database), but nobody can follow it live. The socket says so first
(`unavailable`, before `run`), sends what the database has, and closes with 4503 unless the
run is over; the page shows a notice and reconnects slowly with ?after=, so once the layer is
back it follows live again from the last frame it drew. A socket that hears nothing for
CHECK_SECONDS while live tries the layer, so an outage mid-run is noticed too. A start socket
opened while the layer is down stays open for its start message and closes after `started`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import json
import time
from collections import deque

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.utils.datastructures import MultiValueDict

from runs.core.crypto import KeyDecryptionError
from runs.core.validation import InvalidRequest, loads_strict
from runs.models import Source
from runs.pipeline.budgets import BudgetExceeded
from runs.pipeline.start import NoRunToolsKey, launch
from runs.playground.forms import InvalidRun, build_run_request
from runs.playground.membership import member_group
from runs.playground.relay import (
    LAYER_ERRORS,
    RelaySink,
    control_group,
    frames_text,
    local_sink,
    request_stop,
    run_group,
)
from runs.playground.run_summary import browser_state, refusal, run_url, watch_url
from runs.playground.watching import (
    REPLAY_BATCH,
    membership_now,
    run_is_finished,
    run_state,
    stored_frames,
    team_membership,
    team_run_id,
)

MAX_MESSAGE_BYTES = 64 * 1024
FLOOD_MESSAGES = 30  # at most this many client messages ...
FLOOD_SECONDS = 10.0  # ... in this many seconds
CATCHUP_TIMEOUT = 1.0  # ask again, and look at the run's row, after this long unanswered
CHECK_SECONDS = 5.0  # while following, look at the run's row this often (a dead reader)
WATCHDOG_TICK = 0.25
# Messages waiting in a socket's inbox from a relay or the channel layer, at most: past that,
# frames are dropped as a full channel drops them, and the socket catches up when it sees the gap.
INBOX_CAPACITY = 100

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_LARGE = 4413
CLOSE_FLOOD = 4429
CLOSE_UNAVAILABLE = 4503

UNAVAILABLE = (
    "Live streaming is unavailable (the channel layer is down). The run continues and is "
    "recorded; this page will reconnect."
)
UNAVAILABLE_BEFORE_START = (
    "Live streaming is unavailable (the channel layer is down). A run you start is still "
    "recorded; this page will show it when it can."
)


class Following(enum.Enum):
    NOTHING = "nothing"
    CATCHING_UP = "catching up"
    LIVE = "live"
    DONE = "done"


def _form_data(form) -> MultiValueDict | None:
    """The start message's form as Django reads a POST; None when it is not that shape."""
    if not isinstance(form, dict):
        return None
    data = MultiValueDict()
    for name, value in form.items():
        values = value if isinstance(value, list) else [value]
        if not isinstance(name, str) or not all(isinstance(item, str) for item in values):
            return None
        data.setlist(name, values)
    return data


MAX_SEQUENCE = 2**63 - 1  # a bigint column: a larger ?after= would be a database error


def _after(scope) -> int:
    for part in scope.get("query_string", b"").decode(errors="replace").split("&"):
        name, _, value = part.partition("=")
        # isdigit() alone takes "²", which int() refuses.
        if name == "after" and value.isascii() and value.isdigit():
            # More digits than any sequence has (int() refuses past 4,300 of them): past the end.
            return MAX_SEQUENCE if len(value) > 19 else min(int(value), MAX_SEQUENCE)
    return 0


class RunConsumer(AsyncWebsocketConsumer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.membership = None
        self.run_id: int | None = None
        self.last = 0  # the last sequence sent to the browser
        self.following = Following.NOTHING
        self.held: dict[int, list] = {}  # live frames that came while catching up
        self.asked_at = 0.0
        self.checked_at = 0.0
        self.lock = asyncio.Lock()
        self.heard_at = 0.0  # when the run's reader was last heard from
        self.watchdog: asyncio.Task | None = None
        self.recent: deque[float] = deque()
        self.layer_down = False  # no channel of our own: the layer failed at connect
        self.closing = False
        # The followed run's relay when its reader is in this process (see the module's doc),
        self.local_relay: RelaySink | None = None
        # Every message for this socket (see __call__); the browser's next one waits its turn.
        self.inbox: asyncio.Queue[dict | Exception] = asyncio.Queue()
        self.browser_turn = asyncio.Event()
        self.in_group = False  # in the followed run's channel-layer group
        self.member_group: str | None = None  # told when the user's membership changes

    async def __call__(self, scope, receive, send) -> None:
        # AsyncConsumer.__call__ (Channels offers no hook for these changes), with three
        # differences that matter:
        # - Every message for the socket comes through one inbox, in arrival order: the
        #   browser's, the channel layer's, and those a relay in this process hands it
        #   without the layer. Channels waits on a task per source and makes a new task
        #   for every message (await_many_dispatch), a cost on every live frame
        #   (docs/performance.md, Playground relay).
        # - The browser's messages are taken one at a time, each after the previous one was
        #   handled, as with Channels: the server's flow control holds the rest back.
        # - A layer that cannot make this socket's channel (Redis down) does not kill the
        #   socket before it is accepted: it opens without a channel, serves what the
        #   database has and says live streaming is unavailable (tests/deploy/test_redis_down.py).
        # Keep in step with Channels' own.
        self.scope = scope
        self.base_send = send
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        pumps = [asyncio.ensure_future(self._pump_browser(receive))]
        try:
            self.channel_name = await self.channel_layer.new_channel()
        except LAYER_ERRORS:
            self.layer_down = True
            self.channel_name = ""
        else:
            layer_receive = functools.partial(self.channel_layer.receive, self.channel_name)
            pumps.append(asyncio.ensure_future(self._pump(layer_receive)))
        try:
            while True:
                message = await self.inbox.get()
                if isinstance(message, Exception):
                    raise message  # a source failed: the socket ends, as with Channels
                await self.dispatch(message)
                if message["type"].startswith("websocket."):
                    self.browser_turn.set()
        except StopConsumer:
            pass
        finally:
            for pump in pumps:
                pump.cancel()
            for pump in pumps:
                with contextlib.suppress(asyncio.CancelledError):
                    await pump

    async def _pump(self, source) -> None:
        try:
            while True:
                self._enqueue(await source())
        except Exception as error:
            self.inbox.put_nowait(error)

    async def _pump_browser(self, receive) -> None:
        try:
            while True:
                message = await receive()
                self.browser_turn.clear()
                self.inbox.put_nowait(message)
                await self.browser_turn.wait()
        except Exception as error:
            self.inbox.put_nowait(error)

    async def dispatch(self, message) -> None:
        # Channels closes stale database connections before every message: a turn on the one
        # sync thread that the database writes of every run share, so live frames would wait
        # behind them (test_live_frames_do_not_wait_for_the_database_thread), and it costs
        # worker CPU on every frame (measured in docs/performance.md). Live frames never touch
        # the database, and every helper here is a database_sync_to_async (which closes stale
        # connections itself), so messages go straight to their handlers.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- Connecting and disconnecting -------------------------------------------------------

    async def connect(self) -> None:
        # Accept first: a close before accepting is an HTTP 403 to the browser, which then
        # cannot tell "log in again" (4401) from "not yours" (4403).
        await self.accept()
        if not self.scope["user"].is_authenticated:
            await self.close(CLOSE_UNAUTHENTICATED)
            return
        self.membership = await team_membership(self.scope)
        if self.membership is None:
            await self.close(CLOSE_FORBIDDEN)
            return
        # Read again once a change would be heard: one committed in between was not.
        if await self._hear_membership_changes() and not await self._still_member():
            return
        run_id = self.scope["url_route"]["kwargs"].get("run_id")
        if run_id is not None:
            if await team_run_id(self.membership.team, run_id) is None:
                await self.close(CLOSE_FORBIDDEN)
                return
            async with self.lock:
                await self._follow(run_id, after=_after(self.scope))
        elif self.layer_down:
            # Say so before the browser's start message: the run will start but not stream.
            await self._unavailable()

    async def _hear_membership_changes(self) -> bool:
        """Join the group told of changes to this user's membership of the socket's team
        (runs.playground.membership): a socket that only watches hears of its user's removal
        at once, not at its next start or stop. Whether it joined."""
        if self.layer_down:
            return False
        group = member_group(self.membership.team_id, self.membership.user_id)
        with contextlib.suppress(*LAYER_ERRORS):
            await self.channel_layer.group_add(group, self.channel_name)
            self.member_group = group
        return self.member_group is not None

    async def disconnect(self, code) -> None:
        if self.member_group is not None and not self.layer_down:
            with contextlib.suppress(*LAYER_ERRORS):
                await self.channel_layer.group_discard(self.member_group, self.channel_name)
        if self.watchdog is not None:
            self.watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watchdog
        if self.run_id is not None:
            await self._discard(self.run_id)

    # --- From the browser -------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.membership is None or self.closing:
            return  # refused at connect, or closed since: the close is on its way
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > MAX_MESSAGE_BYTES:
            await self._error("too_large", f"Messages are limited to {MAX_MESSAGE_BYTES} bytes.")
            await self._close(CLOSE_TOO_LARGE)
            return
        if self._flooding():
            await self._error("flood", "Too many messages; reload the page to go on.")
            await self._close(CLOSE_FLOOD)
            return
        try:
            # The strict parser: no NaN, lone surrogates or absurd nesting (64 KiB of "[").
            message = loads_strict(text_data, "message") if text_data is not None else None
        except InvalidRequest:
            message = None
        action = message.get("action") if isinstance(message, dict) else None
        if action == "start":
            await self._start(message.get("form"))
        elif action == "stop":
            await self._stop()
        else:
            await self._error("bad_message", 'Send JSON: {"action": "start" or "stop", ...}.')

    def _flooding(self) -> bool:
        now = time.monotonic()
        while self.recent and now - self.recent[0] > FLOOD_SECONDS:
            self.recent.popleft()
        self.recent.append(now)
        return len(self.recent) > FLOOD_MESSAGES

    async def _still_member(self) -> bool:
        """Read the user's membership again before acting: the role at connect may be stale
        (demoted, removed). Closes with 4403 once the user is no longer in the team."""
        self.membership = await membership_now(self.scope["user"], self.membership.team_id)
        if self.membership is None:
            await self._error("not_a_member", "You are no longer a member of this team.")
            await self._close(CLOSE_FORBIDDEN)
            return False
        return True

    async def _start(self, form) -> None:
        if not await self._still_member():
            return
        if not self.membership.can_run:
            await self._error("forbidden", "Viewers can watch runs but not start them.")
            return
        if self.following in (Following.CATCHING_UP, Following.LIVE):
            await self._error("busy", "This tab is following a run; wait for it or stop it.")
            return
        data = _form_data(form)
        if data is None:
            await self._error("bad_message", "form must map field names to strings.")
            return
        try:
            run_request, _body = build_run_request(data)
        except InvalidRun as problem:
            await self._send({"type": "invalid", "errors": problem.errors})
            return
        user = self.scope["user"]
        sink = RelaySink(starter=self)
        try:
            launched = await launch(
                self.membership.team,
                run_request,
                source=Source.PLAYGROUND,
                user=getattr(user, "_wrapped", user),
                sinks=[sink],
            )
        except (BudgetExceeded, NoRunToolsKey, KeyDecryptionError) as error:
            code, message = refusal(error)
            await self._error(code, message)
            return
        run = launched.run
        started = {"type": "started", "run": run.pk, "url": watch_url(run.pk)}
        if launched.reader is None:  # over already: not streamed, or refused upstream
            await self._send(started)
            async with self.lock:
                await self._follow(run.pk)
            return
        await sink.attach(launched.reader)
        async with self.lock:
            # The sink puts this socket in the run's group before its first frame: it follows
            # live from sequence 1, with no database reads while many runs start at once.
            await self._leave()
            self.run_id, self.last, self.held = run.pk, 0, {}
            self.local_relay = sink
            await self._send(started)
            state = browser_state(run)
            if self.layer_down or sink.layer_failed:
                # The run goes on and is recorded; the page comes back for it later.
                self._unwatch()
                await self._unavailable(state)
                return
            self.following = Following.LIVE
            self.checked_at = self.heard_at = time.monotonic()
            await self._send({"type": "run", **state})
            self._keep_watch()

    async def _stop(self) -> None:
        if not await self._still_member():
            return
        if not self.membership.can_run:
            await self._error("forbidden", "Viewers cannot stop runs.")
            return
        if self.run_id is None or self.following is Following.DONE:
            await self._error("not_running", "There is no run going on to stop.")
            return
        if not await request_stop(self.run_id):
            await self._error("not_running", "The run has already ended.")

    # --- Following a run ----------------------------------------------------------------------

    async def _leave(self) -> None:
        if self.run_id is not None and self.following is not Following.DONE:
            await self._discard(self.run_id)

    async def _join(self, run_id: int) -> bool:
        """Join the run's group (or its relay, in this process); False when the channel layer
        is down."""
        if self.layer_down:
            return False
        relay = local_sink(run_id)
        if relay is not None and relay.watch(self):
            self.local_relay = relay
            return True
        self.in_group = True
        try:
            await self.channel_layer.group_add(run_group(run_id), self.channel_name)
        except LAYER_ERRORS:
            # The Redis pub/sub layer counts us in the group even when subscribing failed.
            await self._discard(run_id)
            return False
        return True

    async def _discard(self, run_id: int) -> None:
        self._unwatch()
        # Leaving a group is tidying up: with the layer down there is nothing to leave.
        if self.in_group and not self.layer_down:
            self.in_group = False
            with contextlib.suppress(*LAYER_ERRORS):
                await self.channel_layer.group_discard(run_group(run_id), self.channel_name)

    def _unwatch(self) -> None:
        if self.local_relay is not None:
            self.local_relay.unwatch(self)
            self.local_relay = None

    def deliver(self, message: dict) -> None:
        """A message from the followed run's relay in this process (relay.LocalViewer)."""
        self._enqueue(message)

    def _enqueue(self, message: dict) -> None:
        """Put a relay's or the layer's message in the inbox, which stays bounded: the layer's
        are taken as they come, not after the previous one was handled, so a socket whose
        browser reads slowly would otherwise hold every frame of its run."""
        if message["type"] == "run.frames" and self.inbox.qsize() >= INBOX_CAPACITY:
            return  # dropped, as a full channel drops it: the next frames show the gap
        self.inbox.put_nowait(message)

    def _keep_watch(self) -> None:
        if self.watchdog is None:
            self.watchdog = asyncio.ensure_future(self._watch())

    async def _follow(self, run_id: int, after: int = 0) -> None:
        await self._leave()
        self.run_id, self.last, self.held = run_id, after, {}
        self.following = Following.CATCHING_UP
        # Join before reading anything, so every frame from now on reaches this socket.
        joined = await self._join(run_id)
        state, frames = await run_state(run_id, after)
        if not joined and not state["finished"]:
            await self._unavailable(state, frames)
            return
        await self._send({"type": "run", **state})
        if state["finished"]:
            await self._finish(state, frames)
            return
        await self._replay(frames)
        await self._ask_reader()
        self._keep_watch()

    async def _replay(self, frames: list[list] | None = None, upto: int | None = None) -> None:
        """Send the stored frames after the last one sent (up to `upto`), from `frames` on."""
        if frames is None:
            frames = await stored_frames(self.run_id, self.last, upto)
        while True:
            if frames:
                await self._emit(frames)
            if len(frames) < REPLAY_BATCH:
                return
            frames = await stored_frames(self.run_id, self.last, upto)

    async def _ask_reader(self) -> None:
        self.asked_at = time.monotonic()
        if self.local_relay is not None:
            if not self.local_relay.closed:
                # Answered like a reply through the layer: after whatever holds the lock now.
                self.inbox.put_nowait(self.local_relay.catch_up(self.last))
            # A closed relay has put run.finished in the inbox already: nothing to ask.
            return
        message = {"type": "run.catchup", "reply_to": self.channel_name, "after": self.last}
        try:
            await self.channel_layer.group_send(control_group(self.run_id), message)
        except LAYER_ERRORS:
            await self._unavailable()

    async def _resync(self) -> None:
        """Nothing heard from the reader for a while: a quiet run, or a layer that failed (or
        came back without our messages). Join again and catch up; this also tries the layer."""
        if await self._join(self.run_id):
            self.following = Following.CATCHING_UP
            await self._ask_reader()
        else:
            await self._unavailable()

    async def _unavailable(self, state: dict | None = None, frames: list[list] | None = None):
        """The channel layer failed: say so first, send the run and its stored frames when
        given, and close (unless no run is followed yet) so that the page reconnects with
        ?after= and follows live again once the layer is back."""
        self.following = Following.NOTHING
        self.held = {}
        self._unwatch()
        notice = {"type": "unavailable", "code": "layer_down", "message": UNAVAILABLE}
        if self.run_id is not None:
            notice.update(run=self.run_id, runUrl=run_url(self.run_id))
        else:
            notice["message"] = UNAVAILABLE_BEFORE_START
        await self._send(notice)
        if state is not None:
            await self._send({"type": "run", **state})
            await self._replay(frames or [])
        if self.run_id is not None:
            await self._close(CLOSE_UNAVAILABLE)

    async def _emit(self, frames: list[list], text: str | None = None) -> None:
        """Send these frames; `text` is their message already encoded, when the relay has it."""
        self.last = frames[-1][0]
        if not self.closing:
            await self.send(text_data=text or frames_text(frames))

    async def _finish(
        self,
        state: dict | None = None,
        frames: list[list] | None = None,
        *,
        last: int | None = None,
        first_token_at: float | None = None,
        recorded: dict | None = None,
    ) -> None:
        """The run is recorded: send what is left of its frames, then its outcome.

        `last` is the run's last sequence when known: a socket that has it reads no frames,
        and with the outcome as `run.finished` carried it (`recorded`), reads nothing at all.
        """
        if state is None:
            caught_up = last is not None and self.last >= last
            if caught_up and recorded is not None:
                state = recorded
            else:
                state, frames = await run_state(
                    self.run_id, None if caught_up else self.last, first_token_at
                )
        if frames:
            await self._replay(frames)
        self.following = Following.DONE
        self.held = {}
        await self._discard(self.run_id)
        await self._send({"type": "finished", **state})

    async def _drain_held(self) -> bool:
        """Pass on the held live frames that follow on; False at a gap."""
        ready = []
        expected = self.last + 1
        for sequence in sorted(self.held):
            if sequence < expected:
                continue
            if sequence != expected:
                break
            ready.append(self.held[sequence])
            expected += 1
        self.held = {seq: frame for seq, frame in self.held.items() if seq >= expected}
        if ready:
            await self._emit(ready)
        return not self.held

    # --- From the team's settings (any worker) -------------------------------------------------

    async def membership_changed(self, message) -> None:
        """The user's membership of this team changed or ended: act with it from now on, and
        close (4403) if it is gone."""
        async with self.lock:
            if self.membership is not None and not self.closing:
                await self._still_member()

    # --- From the run's reader (any worker) ---------------------------------------------------

    async def run_frames(self, message) -> None:
        async with self.lock:
            if message.get("run") != self.run_id:
                return
            self.heard_at = time.monotonic()
            if self.following is Following.CATCHING_UP:
                for frame in message["frames"]:
                    if frame[0] > self.last:
                        self.held[frame[0]] = frame
                return
            if self.following is not Following.LIVE:
                return
            fresh = [frame for frame in message["frames"] if frame[0] > self.last]
            if not fresh:
                return
            if fresh[0][0] != self.last + 1:
                # Frames went missing on the way (a full channel drops them): catch up again.
                self.following = Following.CATCHING_UP
                self.held = {frame[0]: frame for frame in fresh}
                await self._ask_reader()
                return
            whole = len(fresh) == len(message["frames"])
            await self._emit(fresh, message.get("text") if whole else None)

    async def run_catchup_reply(self, message) -> None:
        async with self.lock:
            if message.get("run") != self.run_id or self.following is not Following.CATCHING_UP:
                return
            self.heard_at = time.monotonic()
            frames = [frame for frame in message["frames"] if frame[0] > self.last]
            first_held = frames[0][0] if frames else message["through"] + 1
            if first_held > self.last + 1:
                # The reader no longer holds these: they are stored.
                await self._replay(upto=first_held - 1)
            frames = [frame for frame in frames if frame[0] > self.last]
            if frames:
                await self._emit(frames)
            if await self._drain_held():
                self.following = Following.LIVE
                self.checked_at = time.monotonic()
            else:
                await self._ask_reader()

    async def run_finished(self, message) -> None:
        async with self.lock:
            if self.closing:
                return  # closed since (4503 and the like): nothing more goes to the browser
            if message.get("run") == self.run_id and self.following is not Following.DONE:
                await self._finish(
                    last=message.get("last"),
                    first_token_at=message.get("firstTokenAt"),
                    recorded=message.get("state"),
                )

    async def _watch(self) -> None:
        """Look after a follow that nobody answers: the reader's worker may be gone."""
        while True:
            await asyncio.sleep(WATCHDOG_TICK)
            async with self.lock:
                now = time.monotonic()
                if self.following is Following.CATCHING_UP:
                    if now - self.asked_at < CATCHUP_TIMEOUT:
                        continue
                elif self.following is Following.LIVE:
                    # A reader that keeps sending frames is alive: its row is read only after
                    # CHECK_SECONDS of silence, not every CHECK_SECONDS (on the database thread
                    # that every run shares).
                    if now - max(self.checked_at, self.heard_at) < CHECK_SECONDS:
                        continue
                    self.checked_at = now
                else:
                    continue
                if await run_is_finished(self.run_id):
                    await self._finish()
                elif self.following is Following.CATCHING_UP:
                    await self._ask_reader()
                elif now - self.heard_at >= CHECK_SECONDS:
                    await self._resync()

    # --- Sending ------------------------------------------------------------------------------

    async def _send(self, message: dict) -> None:
        if self.closing:
            return  # closed (4403 and the like): nothing more goes to the browser
        await self.send(text_data=json.dumps(message))

    async def _close(self, code: int) -> None:
        self.closing = True
        await self.close(code)

    async def _error(self, code: str, message: str) -> None:
        await self._send({"type": "error", "code": code, "message": message})
