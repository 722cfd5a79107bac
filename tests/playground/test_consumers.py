"""The playground's websocket, through the real ASGI stack, against the real simulator.

Every socket is a WebsocketCommunicator on rtdash.asgi.application (origin check, session
auth, routing); every run goes to the simulator and is recorded in the test database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading

import pytest
from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer

from runs.core.sse import Frame
from runs.gateway.views import settle
from runs.models import Run, RunEvent, RunStatus
from runs.pipeline import reader as runner
from runs.pipeline.recording import RunOutcome, finish_run
from runs.playground import consumers, relay
from runs.playground.relay import control_group
from tests.conftest import ACME_KEY
from tests.sockets import (
    HELLO,
    SLOW,
    Socket,
    astored,
    reader_on_another_worker,
    run_row,
    running_run,
    with_simulate,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("empty_channel_layer"),
]


def deltas(frames: list[list]) -> str:
    return "".join(
        json.loads(data)["delta"] for _, event, data in frames if event == "assistant_message_delta"
    )


# --- Who may connect ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws/playground/", "/ws/runs/1/"])
async def test_it_closes_anonymous_sockets_with_4401(application, path):
    async with Socket(application, path) as socket:
        assert socket.connected
        assert await socket.closed_with() == 4401


async def test_it_refuses_another_origin(application, bob):
    async with Socket(application, "/ws/playground/", bob, origin=b"http://evil.example") as socket:
        assert not socket.connected


async def test_it_closes_another_teams_run_with_4403(application, charlie, bob, acme):
    run = await sync_to_async(running_run)(acme, bob)
    async with Socket(application, f"/ws/runs/{run.pk}/", charlie) as socket:
        assert await socket.closed_with() == 4403
        assert not socket.messages


async def test_it_closes_an_unknown_run_like_a_foreign_one(application, bob):
    async with Socket(application, "/ws/runs/987654/", bob) as socket:
        assert await socket.closed_with() == 4403


async def test_it_closes_a_user_without_a_team_with_4403(application, dave):
    async with Socket(application, "/ws/playground/", dave) as socket:
        assert await socket.closed_with() == 4403


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_viewers_can_watch_but_not_start_or_stop(application, victor, bob):
    async with Socket(application, "/ws/playground/", bob) as starter:
        run_id = await starter.start(SLOW)
        async with Socket(application, f"/ws/runs/{run_id}/", victor) as viewer:
            await viewer.until_frames(3)
            await viewer.send({"action": "stop"})
            assert (await viewer.until("error"))["code"] == "forbidden"
            await viewer.send({"action": "start", "form": HELLO})
            assert (await viewer.until("error"))["code"] == "forbidden"
            finished = await viewer.until("finished")
    assert finished["status"] == "completed"
    assert await Run.objects.acount() == 1


# --- Starting and streaming a run ---------------------------------------------------------


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_it_streams_a_run_and_records_it_like_the_gateway(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(HELLO)
        first = await socket.receive()
        finished = await socket.until("finished")

    assert first["type"] == "run" and first["run"] == run_id and not first["finished"]
    run = await run_row(run_id)
    assert (run.source, run.user_id, run.agent, run.stream) == (
        "playground",
        bob.pk,
        "support-chat",
        True,
    )
    assert run.status == "completed"
    # Every frame once, in order, exactly as stored.
    frames = socket.frames
    assert [frame[0] for frame in frames] == list(range(1, len(frames) + 1))
    assert frames == await astored(run_id)
    assert run.frame_count == len(frames)
    assert deltas(frames) == run.result
    assert frames[0][1] == "run_started" and frames[-1][1] == "run_completed"
    assert finished["status"] == "completed"
    assert finished["usage"] == {
        "input": run.input_tokens,
        "output": run.output_tokens,
        "total": run.total_tokens,
    }
    assert finished["threadId"] == run.upstream_thread_id
    first_delta = await RunEvent.objects.filter(
        run_id=run_id, event="assistant_message_delta"
    ).aearliest("sequence")
    expected_ms = (first_delta.created_at - run.started_at).total_seconds() * 1000
    assert abs(finished["firstTokenMs"] - expected_ms) <= 5
    assert finished["runUrl"].rstrip("/").endswith(f"/runs/{run_id}")
    assert ACME_KEY not in json.dumps(socket.messages)


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_it_continues_a_thread(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        first_id = await socket.start(HELLO)
        finished = await socket.until("finished")
        thread = finished["threadId"]
        second_id = await socket.start({**HELLO, "prompt": "And then?", "thread": thread})
        await socket.until("finished")
    first, second = await run_row(first_id), await run_row(second_id)
    assert second.upstream_thread_id == first.upstream_thread_id == thread
    assert "Reply 2 in this thread" in second.result
    assert second.thread_id == first.thread_id is not None


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_it_sends_messages_config_and_metadata(application, bob):
    form = {
        "agent": "code-assistant",
        "input_mode": "messages",
        "message_role": ["user", "assistant", "user"],
        "message_content": ["Look at src/app.py", "Looking.", "Run the tests please"],
        "max_turns": "1",
        "max_tokens": "64",
        "temperature": "0.5",
        "meta_key": ["ticket", "simulate"],
        "meta_value": ["T-42", '{"keepAlive": true}'],
        "stream": "on",
    }
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(form)
        finished = await socket.until("finished")
    run = await run_row(run_id)
    assert run.messages[0] == {"role": "user", "content": "Look at src/app.py"}
    assert run.config == {"maxTokens": 64, "maxTurns": 1, "temperature": 0.5}
    assert run.metadata == {"ticket": "T-42", "simulate": {"keepAlive": True}}
    assert finished["iterations"] == 1  # maxTurns reached the upstream


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({**HELLO, "max_tokens": "0"}, "max_tokens"),
        ({**HELLO, "max_turns": "0"}, "max_turns"),
        ({**HELLO, "temperature": "2.5"}, "temperature"),
        ({**HELLO, "prompt": "  "}, "prompt"),
        ({**HELLO, "agent": ""}, "agent"),
        ({**HELLO, "input_mode": "messages"}, "messages"),
        ({**HELLO, "meta_key": ["", "x"], "meta_value": ["orphan", "1"]}, "metadata"),
    ],
)
@pytest.mark.usefixtures("upstream", "acme_key")
async def test_it_refuses_an_invalid_form_before_anything_is_sent(application, bob, form, field):
    async with Socket(application, "/ws/playground/", bob) as socket:
        await socket.send({"action": "start", "form": form})
        invalid = await socket.until("invalid")
    assert field in invalid["errors"]
    assert await Run.objects.acount() == 0


@pytest.mark.usefixtures("upstream")
async def test_it_says_when_the_team_has_no_key(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        await socket.send({"action": "start", "form": HELLO})
        error = await socket.until("error")
    assert error["code"] == "no_runtools_key"
    assert await Run.objects.acount() == 0


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_one_socket_follows_one_run_at_a_time(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        await socket.start(SLOW)
        await socket.send({"action": "start", "form": HELLO})
        assert (await socket.until("error"))["code"] == "busy"
        await socket.until("finished")
    assert await Run.objects.acount() == 1


# --- Messages the socket refuses ------------------------------------------------------------


async def test_it_closes_on_a_message_over_64_kib(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        big = {"action": "start", "form": {**HELLO, "prompt": "x" * (64 * 1024)}}
        await socket.send(big)
        assert (await socket.receive())["code"] == "too_large"
        assert await socket.closed_with() == 4413
    assert await Run.objects.acount() == 0


async def test_it_closes_a_flood(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        for _ in range(31):
            await socket.send({"action": "ping"})
        assert await socket.closed_with() == 4429
    errors = socket.of_type("error")
    assert [error["code"] for error in errors] == ["bad_message"] * 30 + ["flood"]


async def test_it_answers_nonsense_with_an_error(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        await socket.communicator.send_to(text_data="not json")
        assert (await socket.receive())["code"] == "bad_message"
        await socket.send({"action": "start", "form": {"agent": 42}})
        assert (await socket.receive())["code"] == "bad_message"


# --- Stop -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_stop_cancels_the_upstream_request_and_keeps_what_arrived(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(SLOW)
        await socket.until_frames(5)
        await socket.send({"action": "stop"})
        finished = await socket.until("finished")
    run = await run_row(run_id)
    assert finished["status"] == run.status == "cancelled"
    assert run.cancel_requested
    assert 5 <= run.frame_count < 40
    assert socket.frames == await astored(run_id)


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_stop_reaches_a_reader_on_another_worker_through_the_channel_layer(
    application, bob, alice, monkeypatch
):
    # Only the channel message can stop it in time: the flag is not polled during the test.
    monkeypatch.setattr(relay, "CANCEL_POLL_SECONDS", 60)
    async with Socket(application, "/ws/playground/", bob) as starter:
        run_id = await starter.start(SLOW)
        await starter.until_frames(3)
        async with (
            reader_on_another_worker(run_id),
            Socket(application, f"/ws/runs/{run_id}/", alice) as other,
        ):
            await other.until("frames")
            await other.send({"action": "stop"})
            finished = await other.until("finished")
    assert finished["status"] == "cancelled"
    assert (await run_row(run_id)).frame_count < 40


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_reader_that_misses_the_stop_message_sees_the_flag(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(
            with_simulate({**SLOW, "agent": "support-chat"}, deltas=200, dripMs=50)
        )
        await socket.until_frames(3)
        # Another worker set the flag and its message was lost.
        await Run.objects.filter(pk=run_id).aupdate(cancel_requested=True)
        finished = await socket.until("finished", timeout=10)
    assert finished["status"] == "cancelled"


async def test_a_control_group_name_is_valid():
    # Channels' own rule (the Redis pub/sub layer does not check names itself).
    assert BaseChannelLayer().require_valid_group_name(control_group(10**18))


# --- Watching: reload, teammates, late joiners ----------------------------------------------


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_closing_the_tab_does_not_stop_the_run(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(SLOW)
        await socket.until_frames(3)
    await settle()
    run = await run_row(run_id)
    assert run.status == "completed"
    assert len(deltas(await astored(run_id)).split()) == 40


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_teammate_watches_the_same_run_live(application, bob, alice):
    async with Socket(application, "/ws/playground/", bob) as starter:
        run_id = await starter.start(SLOW)
        await starter.until_frames(2)
        async with Socket(application, f"/ws/runs/{run_id}/", alice) as teammate:
            info = await teammate.until("run")
            assert info["status"] == "running" and info["elapsedMs"] > 0
            await teammate.until("finished")
        await starter.until("finished")
    expected = await astored(run_id)
    assert starter.frames == teammate.frames == expected


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_sockets_on_the_readers_worker_need_no_channel_layer_for_frames(
    application, bob, alice, monkeypatch
):
    layer = get_channel_layer()
    sent: list[dict] = []

    async def group_send(group, message):
        sent.append(message)

    # Nothing that goes through the layer arrives: frames must come another way.
    monkeypatch.setattr(layer, "group_send", group_send)
    async with Socket(application, "/ws/playground/", bob) as starter:
        run_id = await starter.start(SLOW)
        await starter.until_frames(2)
        async with Socket(application, f"/ws/runs/{run_id}/", alice) as teammate:
            await teammate.until("finished")
        await starter.until("finished")
    expected = await astored(run_id)
    assert starter.frames == teammate.frames == expected
    assert len(expected) > 40
    # Nobody elsewhere asked for the run, so no frame was published for other workers.
    assert {message["type"] for message in sent} == {"run.finished"}


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_failed_publish_stops_publishing_until_the_next_catch_up(
    application, bob, alice, monkeypatch
):
    from redis.exceptions import ConnectionError as RedisConnectionError

    monkeypatch.setattr(consumers, "CHECK_SECONDS", 0.3)  # a silent socket asks sooner
    layer = get_channel_layer()
    real_group_send = layer.group_send
    published = {"failed": 0, "after_failures": 0}
    attempted: list[int] = []  # sequences the sink tried to publish

    async def flaky_group_send(group, message):
        if message["type"] == "run.frames":
            attempted.extend(frame[0] for frame in message["frames"])
            if published["failed"] < 3:
                published["failed"] += 1
                raise RedisConnectionError("Redis went away for a moment")
            published["after_failures"] += 1
        return await real_group_send(group, message)

    monkeypatch.setattr(layer, "group_send", flaky_group_send)
    async with Socket(application, "/ws/playground/", bob) as starter:
        # 80 deltas 50 ms apart (4 s): room for three stops and catch-ups on a slow machine.
        run_id = await starter.start(with_simulate(SLOW, deltas=80))
        await starter.until_frames(2)
        # The second socket is on another worker: it needs the published frames.
        async with reader_on_another_worker(run_id):
            async with Socket(application, f"/ws/runs/{run_id}/", alice) as remote:
                await remote.until("finished", timeout=20)
            await starter.until("finished")
    expected = await astored(run_id)
    assert remote.frames == starter.frames == expected
    # Each failure stopped publishing and each catch-up started it again; then it stuck.
    assert published["failed"] == 3 and published["after_failures"] > 5
    skipped = set(range(attempted[0], attempted[-1] + 1)) - set(attempted)
    assert len(skipped) >= 3  # not tried while stopped: the catch-up answers carried them


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_slow_publish_neither_holds_the_reader_up_nor_stops_publishing(
    application, bob, alice, monkeypatch
):
    # Under load the layer's connection can stay busy for a while: the reader must go on
    # relaying meanwhile, and the frames for other workers must still go out, in order,
    # without the watcher waiting for its watchdog to notice a silence and catch up.
    layer = get_channel_layer()
    real_group_send = layer.group_send
    attempted: list[int] = []  # sequences the sink tried to publish
    publish_stuck, release = asyncio.Event(), asyncio.Event()

    async def slow_group_send(group, message):
        if message["type"] == "run.frames":
            attempted.extend(frame[0] for frame in message["frames"])
            if not publish_stuck.is_set():
                publish_stuck.set()
                await release.wait()
        return await real_group_send(group, message)

    monkeypatch.setattr(layer, "group_send", slow_group_send)
    async with Socket(application, "/ws/playground/", bob) as starter:
        run_id = await starter.start(with_simulate(SLOW, deltas=80))  # 4 s
        await starter.until_frames(2)
        async with reader_on_another_worker(run_id):
            async with Socket(application, f"/ws/runs/{run_id}/", alice) as remote:
                await publish_stuck.wait()
                # The reader relays on while the publish is stuck (it once waited up to 1 s,
                # then stopped publishing).
                await starter.until_frames(len(starter.frames) + 25)
                release.set()
                await remote.until("finished", timeout=20)
            await starter.until("finished")
    expected = await astored(run_id)
    assert remote.frames == starter.frames == expected
    # Every frame from the first published one to the run's last was published.
    assert attempted == list(range(attempted[0], expected[-1][0] + 1))


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_frames_dropped_from_a_full_inbox_are_caught_up(application, bob, monkeypatch):
    # Every live frame is dropped, as if the socket could not keep up: the socket must get
    # each frame anyway, once and in order, from the relay's catch-up answers.
    monkeypatch.setattr(consumers, "INBOX_CAPACITY", 0)
    monkeypatch.setattr(consumers, "CHECK_SECONDS", 0.3)
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(with_simulate(SLOW, deltas=80))  # 4 s
        finished = await socket.until("finished", timeout=20)
    run = await run_row(run_id)
    assert finished["status"] == run.status == "completed"
    assert socket.frames == await astored(run_id)
    assert len(socket.frames) == run.frame_count > 80
    # While the run went on, not all at once from the database at the end.
    assert len(socket.of_type("frames")) >= 3


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_live_frames_do_not_wait_for_the_database_thread(application, bob, monkeypatch):
    # Every database write of every run goes through one sync thread, busy under load. Live
    # frames must not queue behind it: Channels' own dispatch takes a turn on that thread
    # before every message (to close stale connections), which RunConsumer.dispatch skips.
    monkeypatch.setattr(consumers, "CHECK_SECONDS", 60)  # no row check while the thread is held
    release = threading.Event()
    async with Socket(application, "/ws/playground/", bob) as socket:
        await socket.start(with_simulate(SLOW, deltas=80))  # 4 s
        await socket.until_frames(2)
        held = asyncio.ensure_future(sync_to_async(release.wait)())
        try:
            await asyncio.sleep(0.05)  # the thread is taken
            assert not held.done()
            before = len(socket.frames)
            await socket.until_frames(before + 5, timeout=2)
        finally:
            release.set()
            await held
        await socket.until("finished")


@pytest.mark.parametrize("where", ["on the reader's worker", "on another worker"])
@pytest.mark.parametrize("join_after", [1, 25, 150])
@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_late_joiner_gets_every_frame_exactly_once_in_order(
    application, bob, alice, join_after, where
):
    form = with_simulate(HELLO, deltas=300, dripMs=4)
    async with Socket(application, "/ws/playground/", bob) as starter:
        run_id = await starter.start(form)
        await starter.until_frames(join_after)
        # On another worker, the joiner catches up and follows through the channel layer;
        # on the reader's, directly with its relay.
        elsewhere = where == "on another worker"
        async with reader_on_another_worker(run_id) if elsewhere else contextlib.nullcontext():
            async with Socket(application, f"/ws/runs/{run_id}/", alice) as late:
                await late.until("finished")
            await starter.until("finished")
    expected = await astored(run_id)
    assert len(expected) == 303  # run_started, 300 deltas, assistant_message, run_completed
    assert late.frames == starter.frames == expected


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_late_joiner_gets_frames_not_yet_stored_from_the_reader(
    application, bob, alice, monkeypatch
):
    # Frames stay unstored for 30 s: whatever the late joiner sees before the end can only
    # have come from the reader's memory (the catch-up answer) or live.
    monkeypatch.setattr(runner, "EVENT_BATCH_SECONDS", 30)
    async with Socket(application, "/ws/playground/", bob) as starter:
        run_id = await starter.start(SLOW)
        await starter.until_frames(10)
        assert await astored(run_id) == []
        async with Socket(application, f"/ws/runs/{run_id}/", alice) as late:
            await late.until_frames(10)
            # The starter's socket may not have been read as far as the late one yet.
            await starter.until_frames(len(late.frames))
            assert late.frames == starter.frames[: len(late.frames)]
            assert await astored(run_id) == []
            await late.until("finished")
        await starter.until("finished")
    assert late.frames == starter.frames == await astored(run_id)


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_finished_run_replays_from_the_database(application, bob, alice):
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start({**HELLO, "agent": "code-assistant"})
        await socket.until("finished")
    async with Socket(application, f"/ws/runs/{run_id}/", alice) as replay:
        info = await replay.until("run")
        finished = await replay.until("finished")
    assert info["finished"] and finished["status"] == "completed"
    assert replay.frames == socket.frames == await astored(run_id)
    assert info["firstTokenMs"] == finished["firstTokenMs"] >= 0


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_reconnect_resumes_after_the_last_frame_it_drew(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(SLOW)
        await socket.until_frames(5)
    seen = socket.frames
    async with Socket(application, f"/ws/runs/{run_id}/?after={seen[-1][0]}", bob) as again:
        await again.until("finished")
    assert seen + again.frames == await astored(run_id)


async def test_a_watcher_sees_the_end_of_a_run_whose_reader_died(application, bob, acme):
    # A run started on a worker that was killed: frames stored, nobody reading.
    run = await sync_to_async(running_run)(acme, bob)
    from django.utils import timezone

    # Stored the way a reader stores them, then left: nobody reads this run any more.
    writer = runner.EventWriter(run.pk)
    now = timezone.now()
    writer.add(Frame("run_started", '{"type":"run_started"}'), now)
    writer.add(
        Frame("assistant_message_delta", '{"type":"assistant_message_delta","delta":"Hel"}'), now
    )
    await writer.close()
    async with Socket(application, f"/ws/runs/{run.pk}/", bob) as socket:
        await socket.until_frames(2)
        # Nobody answers the catch-up; the reaper ends the run meanwhile.
        outcome = RunOutcome(frame_count=2)
        outcome.fail("reader_lost", "The worker reading this run stopped.", RunStatus.INTERRUPTED)
        await sync_to_async(finish_run)(run.pk, outcome)
        finished = await socket.until("finished", timeout=5)
    assert finished["status"] == "interrupted"
    assert finished["errorMessage"] == "The worker reading this run stopped."
    assert [frame[0] for frame in socket.frames] == [1, 2]


# --- Every simulator fault ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "bad_request"),
        (401, "unauthorized"),
        (403, "forbidden"),
        (404, "not_found"),
        (429, "rate_limited"),
        (500, "internal_error"),
        (502, "provider_error"),
        (503, "unavailable"),
    ],
)
@pytest.mark.usefixtures("upstream", "acme_key")
async def test_an_upstream_error_status_ends_the_run_failed_with_its_message(
    application, bob, status, code
):
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(with_simulate(HELLO, status=status))
        finished = await socket.until("finished")
    run = await run_row(run_id)
    assert finished["status"] == run.status == "failed"
    assert finished["httpStatus"] == status
    assert finished["errorCode"] == code
    assert finished["errorMessage"] == run.error_message != ""
    assert not socket.frames


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_an_unknown_agent_is_a_404_from_the_upstream(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        await socket.start({**HELLO, "agent": "no-such-agent"})
        finished = await socket.until("finished")
    assert (finished["status"], finished["httpStatus"]) == ("failed", 404)
    assert "no-such-agent" in finished["errorMessage"]


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_cut_stream_ends_the_run_interrupted(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(with_simulate({**HELLO, "agent": "code-assistant"}, cutAfter=5))
        finished = await socket.until("finished")
    assert finished["status"] == "interrupted"
    assert finished["errorCode"] == "upstream_disconnected"
    assert [frame[1] for frame in socket.frames] == [
        "run_started",
        "tool_call_started",
        "tool_output_delta",
        "tool_output_delta",
        "tool_output_delta",
    ]
    assert socket.frames == await astored(run_id)


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_an_error_frame_is_relayed_and_fails_the_run(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        await socket.start(with_simulate(HELLO, errorAfter=3))
        finished = await socket.until("finished")
    assert finished["status"] == "failed"
    assert finished["errorCode"] == "provider_error"
    event, data = socket.frames[-1][1:]
    assert event == "error" and "errorAfter" in json.loads(data)["error"]["message"]
    assert len(socket.frames) == 4


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_hang_before_the_first_byte_fails_with_a_timeout(application, bob, settings):
    settings.RTDASH_UPSTREAM_READ_TIMEOUT = 0.5
    async with Socket(application, "/ws/playground/", bob) as socket:
        await socket.start(with_simulate(HELLO, hangSeconds=5))
        finished = await socket.until("finished")
    assert finished["status"] == "failed"
    assert finished["errorCode"] == "upstream_timeout"


@pytest.mark.parametrize(
    ("simulate", "unknown"),
    [
        ({"keepAlive": True}, []),
        ({"unknownFrames": True}, ["sandbox_status", "x_custom_metric"]),
        ({"noEventLine": True}, []),
        ({"multilineData": True}, []),
        ({"nonJsonFrame": True}, ["note"]),
        ({"done": True}, ["message"]),
        ({"dripMs": 10}, []),
    ],
)
@pytest.mark.usefixtures("upstream", "acme_key")
async def test_odd_but_valid_streams_complete_with_every_frame_relayed(
    application, bob, simulate, unknown
):
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(with_simulate({**HELLO, "agent": "deep-thinker"}, **simulate))
        finished = await socket.until("finished")
    known = {"run_started", "assistant_thinking_delta", "assistant_message_delta"}
    known |= {"assistant_message", "run_completed"}
    assert finished["status"] == "completed"
    assert [event for _, event, _ in socket.frames if event not in known] == unknown
    assert socket.frames == await astored(run_id)
    assert finished["usage"]["reasoning"] > 0


@pytest.mark.parametrize("run_status", ["registered", "dispatched"])
@pytest.mark.usefixtures("upstream", "acme_key")
async def test_an_unfinished_upstream_status_is_recorded(application, bob, run_status):
    async with Socket(application, "/ws/playground/", bob) as socket:
        await socket.start(with_simulate(HELLO, runStatus=run_status))
        finished = await socket.until("finished")
    assert finished["status"] == run_status
    assert [frame[1] for frame in socket.frames] == ["run_started", "run_completed"]


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_missing_usage_fields_stay_missing(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        await socket.start(with_simulate(HELLO, omitUsageFields=["outputTokens", "totalTokens"]))
        finished = await socket.until("finished")
    assert set(finished["usage"]) == {"input"}


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_long_stream_arrives_whole(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(with_simulate(HELLO, deltas=20_000))
        await socket.until("finished", timeout=60)
    frames = socket.frames
    assert len(frames) == 20_003
    assert [frame[0] for frame in frames] == list(range(1, 20_004))
    assert frames == await astored(run_id)


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_non_streamed_run_over_the_socket_ends_with_its_summary(application, bob):
    form = {key: value for key, value in HELLO.items() if key != "stream"}
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(form)
        finished = await socket.until("finished")
    run = await run_row(run_id)
    assert run.stream is False and finished["status"] == "completed"
    assert not socket.frames


async def test_a_refused_socket_ignores_what_it_is_sent(application, db):
    async with Socket(application, "/ws/playground/") as socket:
        await socket.send({"action": "start", "form": HELLO})
        assert await socket.closed_with() == 4401
        assert not socket.messages


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_the_key_never_travels_on_the_channel_layer(application, bob, alice, monkeypatch):
    layer = get_channel_layer()
    carried: list[str] = []

    def recording(method):
        async def wrapper(name, message):
            carried.append(repr(message))
            return await method(name, message)

        return wrapper

    monkeypatch.setattr(layer, "group_send", recording(layer.group_send))
    monkeypatch.setattr(layer, "send", recording(layer.send))
    async with Socket(application, "/ws/playground/", bob) as starter:
        run_id = await starter.start(SLOW)
        await starter.until_frames(3)
        # From another worker, so that catching up, live frames and Stop all go through the
        # channel layer.
        async with reader_on_another_worker(run_id):
            async with Socket(application, f"/ws/runs/{run_id}/", alice) as late:
                await late.until_frames(15)  # joined at about the 4th: the rest came live
                await late.send({"action": "stop"})
                await late.until("finished")
            await starter.until("finished")
    kinds = {message.split("'type': '")[1].split("'")[0] for message in carried}
    assert {"run.frames", "run.catchup", "run.catchup.reply", "run.stop", "run.finished"} <= kinds
    assert not any(ACME_KEY in message for message in carried)


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_failing_channel_layer_never_ends_a_run(application, bob, monkeypatch, caplog):
    # Redis goes away mid-run: every frame the relay sends is refused.
    from redis.exceptions import ConnectionError as RedisConnectionError

    from runs.playground import consumers

    layer = get_channel_layer()
    group_send = layer.group_send

    async def refusing(group, message):
        if message["type"] in ("run.frames", "run.finished"):
            raise RedisConnectionError("Connection refused")
        return await group_send(group, message)

    monkeypatch.setattr(layer, "group_send", refusing)
    monkeypatch.setattr(consumers, "CHECK_SECONDS", 0.5)
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(HELLO)
        # Either the socket notices the failed relay before it follows the run (then it says
        # "unavailable", sends what is stored and closes 4503 for the page to come back), or
        # it hears nothing live, finds the run over and sends it all from the database.
        while (await socket.receive())["type"] not in ("finished", "unavailable"):
            pass
        frames = socket.frames
        if socket.messages[-1]["type"] == "unavailable":
            assert await socket.closed_with() == consumers.CLOSE_UNAVAILABLE
            frames = socket.frames
            after = frames[-1][0] if frames else 0
            async with Socket(application, f"/ws/runs/{run_id}/?after={after}", bob) as again:
                await again.until("finished")
            frames += again.frames
            socket = again
    finished = socket.of_type("finished")[-1]
    run = await run_row(run_id)
    assert run.status == finished["status"] == "completed"
    assert frames == await astored(run_id)
    assert len(frames) == run.frame_count > 3
    warnings = [r for r in caplog.records if "channel layer failed" in r.getMessage()]
    assert len(warnings) == 1
