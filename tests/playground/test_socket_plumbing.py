"""How a playground socket is plumbed: the session read without wrapping `send`, one inbox
for every source of messages, sockets that close leaving nothing behind, and live sockets
that leave the database alone.

Through rtdash.asgi.application (the real middleware stack) against the real simulator.
"""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from rtdash.websocket_auth import WebsocketAuthStack
from runs.models import Run
from runs.playground import consumers
from runs.playground.consumers import RunConsumer
from runs.playground.relay import RelaySink, frames_text
from runs.playground.run_summary import SUMMARY_FIELDS, browser_state
from tests.helpers import make_run
from tests.sockets import (
    ORIGIN,
    SLOW,
    Socket,
    _session_cookie,
    astored,
    run_row,
    running_run,
    with_simulate,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("empty_channel_layer"),
]


async def test_the_session_names_the_user_and_send_goes_to_the_server_unwrapped(bob):
    seen = {}

    async def inner(scope, receive, send):
        seen["user"] = await sync_to_async(lambda: scope["user"].pk)()
        seen["send"] = send
        await send({"type": "websocket.close", "code": 1000})

    cookie = await sync_to_async(_session_cookie)(bob)
    communicator = WebsocketCommunicator(
        WebsocketAuthStack(inner), "/", headers=[(b"cookie", cookie), (b"origin", ORIGIN)]
    )
    connected, _code = await communicator.connect()
    assert not connected
    assert seen["user"] == bob.pk
    # The server's own send, not Channels' session wrapper around it.
    assert getattr(seen["send"], "__self__", None) is not None
    assert type(seen["send"].__self__).__name__ != "InstanceSessionWrapper"
    await communicator.disconnect()


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_idle_sockets_close_leaving_nothing_behind(application, bob):
    opened: list[weakref.ref] = []
    real_init = RunConsumer.__init__

    def remembered(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        opened.append(weakref.ref(self))

    RunConsumer.__init__ = remembered
    try:
        tasks_before = set(asyncio.all_tasks())
        sockets = [Socket(application, "/ws/playground/", bob) for _ in range(20)]
        for socket in sockets:
            await socket.__aenter__()
            assert socket.connected
        assert len(opened) == 20
        await asyncio.sleep(0.2)  # idle: nothing arrives
        for socket in sockets:
            assert await socket.communicator.receive_nothing(timeout=0.01)
            await socket.__aexit__(None, None, None)
    finally:
        RunConsumer.__init__ = real_init
    await asyncio.sleep(0.05)
    left = [task for task in asyncio.all_tasks() - tasks_before if not task.done()]
    assert [task for task in left if "_pump" in repr(task)] == []
    del sockets, socket
    gc.collect()
    assert [ref for ref in opened if ref() is not None] == []


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_browser_message_waits_until_the_previous_one_is_handled(application, bob):
    # Two messages sent back to back: the second (a stop) is handled after the first (a
    # start) has finished, so it finds the run the first one started.
    async with Socket(application, "/ws/playground/", bob) as socket:
        await socket.send({"action": "start", "form": with_simulate(SLOW, deltas=80)})
        await socket.send({"action": "stop"})
        started = await socket.until("started")
        finished = await socket.until("finished")
    assert finished["status"] == "cancelled"
    assert socket.of_type("error") == []
    assert finished["run"] == started["run"]


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_sockets_on_the_readers_worker_get_the_same_text_for_every_frame(
    application, bob, alice
):
    texts: dict[str, list[str]] = {"starter": [], "teammate": []}

    async def read_all(socket: Socket, name: str) -> None:
        while True:
            output = await socket.communicator.receive_output(timeout=20)
            message = json.loads(output["text"])
            socket.messages.append(message)
            if message["type"] == "frames":
                texts[name].append(output["text"])
            if message["type"] == "finished":
                return

    async with Socket(application, "/ws/playground/", bob) as starter:
        run_id = await starter.start(SLOW)
        await starter.until_frames(2)
        async with Socket(application, f"/ws/runs/{run_id}/", alice) as teammate:
            await teammate.until("run")
            await asyncio.gather(read_all(starter, "starter"), read_all(teammate, "teammate"))
    expected = await astored(run_id)
    assert starter.frames == teammate.frames == expected
    # Each message is exactly what encoding its frames gives, shared or not.
    for text in texts["starter"] + texts["teammate"]:
        assert text == frames_text(json.loads(text)["frames"])
    live_for_both = set(texts["starter"]) & set(texts["teammate"])
    assert len(live_for_both) > 10  # the same live messages went to both


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_live_socket_reads_the_run_row_only_after_a_silence(application, bob, monkeypatch):
    monkeypatch.setattr(consumers, "CHECK_SECONDS", 0.3)
    reads: list[int] = []
    real = consumers.run_is_finished

    async def counted(run_id):
        reads.append(run_id)
        return await real(run_id)

    monkeypatch.setattr(consumers, "run_is_finished", counted)
    async with Socket(application, "/ws/playground/", bob) as socket:
        # Deltas every 50 ms for 4 s: never a silence of CHECK_SECONDS.
        await socket.start(with_simulate(SLOW, deltas=80))
        finished = await socket.until("finished")
    assert finished["status"] == "completed"
    assert reads == []
    assert socket.frames == await astored(finished["run"])


async def test_the_layers_frames_wait_in_a_bounded_inbox_and_its_other_messages_always_do():
    """The layer's messages are pumped into the inbox as they come (not each after the last
    was handled): a socket that cannot keep up keeps at most INBOX_CAPACITY frames messages,
    as a full channel would, and catches up from the gap; the run's end still gets in."""
    from channels.layers import InMemoryChannelLayer

    layer = InMemoryChannelLayer(capacity=1000)
    channel = await layer.new_channel()
    consumer = RunConsumer()
    pump = asyncio.ensure_future(consumer._pump(lambda: layer.receive(channel)))
    try:
        for sequence in range(1, consumers.INBOX_CAPACITY + 51):
            await layer.send(channel, {"type": "run.frames", "frames": [[sequence, "x", "{}"]]})
        await layer.send(channel, {"type": "run.finished", "run": 1})
        for _ in range(200):
            if consumer.inbox.qsize() > consumers.INBOX_CAPACITY:
                break
            await asyncio.sleep(0.01)
        waiting = [consumer.inbox.get_nowait() for _ in range(consumer.inbox.qsize())]
    finally:
        pump.cancel()
    assert [m["type"] for m in waiting] == ["run.frames"] * consumers.INBOX_CAPACITY + [
        "run.finished"
    ]
    assert waiting[-2]["frames"][0][0] == consumers.INBOX_CAPACITY  # the later ones dropped


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_sockets_on_the_readers_worker_finish_from_the_recorded_run_without_reading_it(
    application, bob, alice, monkeypatch
):
    reads: list[int] = []
    real = consumers.run_state

    async def counted(run_id, *args, **kwargs):
        reads.append(run_id)
        return await real(run_id, *args, **kwargs)

    monkeypatch.setattr(consumers, "run_state", counted)
    async with Socket(application, "/ws/playground/", bob) as starter:
        run_id = await starter.start(with_simulate(SLOW, deltas=30))
        await starter.until_frames(2)
        async with Socket(application, f"/ws/runs/{run_id}/", alice) as teammate:
            await teammate.until("run")
            assert reads == [run_id]  # the teammate's one read, to follow from the start
            finished = await starter.until("finished")
            teammate_finished = await teammate.until("finished")
    assert reads == [run_id]  # and none when the run ended
    row = await run_row(run_id)
    expected = await sync_to_async(browser_state)(row)
    for message in (dict(finished), dict(teammate_finished)):
        assert message.pop("type") == "finished"
        assert message.pop("elapsedMs") >= row.duration_ms
        assert 0 < message.pop("firstTokenMs") < row.duration_ms
        assert message == {key: value for key, value in expected.items() if key != "elapsedMs"}
    assert finished["status"] == "completed" and finished["usage"]["output"] > 0
    assert starter.frames == teammate.frames == await astored(run_id)


def test_the_summary_needs_only_its_fields(django_assert_num_queries, acme):
    # Finished and priced, so that every branch of the summary reads its columns.
    run = make_run(acme, upstream_thread_id="thr_1", cost=Decimal("0.25"), cost_status="computed")
    loaded = Run.objects.only(*SUMMARY_FIELDS).get(pk=run.pk)
    with django_assert_num_queries(0):
        state = browser_state(loaded, run.started_at)
    assert state["run"] == run.pk and state["firstTokenMs"] == 0
    assert state["cost"] == "$0.25" and state["threadUrl"] == "/threads/thr_1/"


async def test_a_run_ended_elsewhere_leaves_the_sockets_to_read_its_row(acme, bob):
    run = await sync_to_async(running_run)(acme, bob)
    sink = RelaySink()
    sink.reader = type("Reader", (), {"record": None})()
    assert sink._recorded_state() is None  # finishing failed: nothing recorded to send
    # As finish_run returns a run some other path had already ended: only its reads loaded.
    sink.reader.record = await Run.objects.only("status", "started_at").aget(pk=run.pk)
    assert sink._recorded_state() is None
    sink.reader.record = await Run.objects.aget(pk=run.pk)
    assert sink._recorded_state()["run"] == run.pk


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_an_outcome_that_cannot_be_built_still_closes_the_relay_and_finishes_the_socket(
    application, bob, monkeypatch, caplog
):
    from runs.playground import relay

    def broken(run, first_token=None):
        raise RuntimeError("no summary today")

    monkeypatch.setattr(relay, "browser_state", broken)
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(with_simulate(SLOW, deltas=5))
        sink = relay.local_sink(run_id)
        finished = await socket.until("finished", timeout=5)
    # The socket read the row, as before the outcome came with run.finished.
    assert finished["status"] == "completed" and finished["run"] == run_id
    assert sink is not None and sink.closed
    assert all(task.done() for task in sink._tasks)  # its control-group listener too
    assert "its outcome could not be built" in caplog.text
