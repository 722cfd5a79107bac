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

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from rtdash.websocket_auth import WebsocketAuthStack
from runs.playground import consumers
from runs.playground.consumers import RunConsumer
from runs.playground.relay import frames_text
from tests.sockets import ORIGIN, Socket, _session_cookie, astored, with_simulate

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("empty_channel_layer"),
]

SLOW = {"agent": "slow-poke", "prompt": "Take your time", "stream": "on"}


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
