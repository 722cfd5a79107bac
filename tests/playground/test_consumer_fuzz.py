"""Random websocket messages against the playground's socket: every message gets a clear answer
or a documented close, nothing raises or logs an error, and no run is left running."""

from __future__ import annotations

import json
import logging
import math

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runs.gateway.views import settle
from runs.models import Run
from runs.playground.consumers import (
    CLOSE_FLOOD,
    CLOSE_FORBIDDEN,
    CLOSE_TOO_LARGE,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNAVAILABLE,
    MAX_MESSAGE_BYTES,
)
from tests import strategies
from tests.sockets import HELLO, Socket

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("empty_channel_layer"),
]

DOCUMENTED_CLOSES = {
    CLOSE_UNAUTHENTICATED,
    CLOSE_FORBIDDEN,
    CLOSE_TOO_LARGE,
    CLOSE_FLOOD,
    CLOSE_UNAVAILABLE,
}
# What ends the consumer's answer to one message.
ANSWERS = {"error", "invalid", "finished"}
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- Strategies -----------------------------------------------------------------------------

scalars = strategies.scalars(2**70)
json_values = strategies.json_values(scalars)
# Near and over the 64 KiB limit, and nested deeper than Python recurses.
huge = st.sampled_from([MAX_MESSAGE_BYTES - 200, MAX_MESSAGE_BYTES + 1, 200_000]).map(
    lambda size: "x" * size
)
deep = st.sampled_from(["[" * 5_000, "[" * 60_000, '{"a":' * 3_000, "[" * 3_000 + "]" * 3_000])
form_text = st.text(max_size=60) | st.sampled_from(["", " ", "\x00", "0", "-1", "1e9", "NaN"])
form_value = form_text | st.lists(form_text, max_size=3) | json_values
# Every field the playground form reads, with right and wrong values. No "simulate" metadata:
# faults such as hangs are tested on purpose elsewhere, not at random.
form_fields = {
    "agent": st.sampled_from(["support-chat", "code-assistant", "deep-thinker", "no-such"])
    | form_value,
    "input_mode": st.sampled_from(["prompt", "messages"]) | form_value,
    "prompt": form_text | huge | form_value,
    "message_role": st.lists(st.sampled_from(["user", "assistant", "system", "x"]), max_size=3)
    | form_value,
    "message_content": st.lists(form_text, max_size=3) | form_value,
    "thread": form_value,
    "max_tokens": st.integers(-5, 200_000).map(str) | form_value,
    "max_turns": st.integers(-5, 2_000).map(str) | form_value,
    "temperature": st.floats(-1, 3).map(str) | form_value,
    "stream": st.sampled_from(["on", "off", ""]) | form_value,
    "meta_key": st.lists(form_text.filter(lambda key: "simulate" not in key), max_size=2),
    "meta_value": st.lists(form_text, max_size=2) | form_value,
}
forms = st.fixed_dictionaries({}, optional=form_fields) | json_values
actions = st.sampled_from(["start", "stop", "START", "", "stream"]) | scalars
messages = st.fixed_dictionaries(
    {}, optional={"action": actions, "form": forms, "run": scalars, "after": scalars}
)
starts = st.fixed_dictionaries({"action": st.just("start"), "form": forms})
text_frames = (
    messages.map(json.dumps)
    | starts.map(json.dumps)
    | json_values.map(json.dumps)
    | st.text(max_size=200)
    | huge
    | deep
)
frames = text_frames.map(lambda text: ("text", text)) | st.binary(max_size=300).map(
    lambda data: ("bytes", data)
)
queries = (
    st.text(max_size=40)
    | st.integers(-(2**70), 2**70).map(lambda n: f"after={n}")
    | st.text(max_size=6).map(lambda text: f"after={text}")
    | st.sampled_from(["after=٣", "after=1&after=x", "after=-0", "after=+5"])
)


# --- Driving a socket -----------------------------------------------------------------------


async def _answer(socket: Socket) -> int | None:
    """Read what the consumer says about one message; the close code if it closed."""
    while True:
        output = await socket.communicator.receive_output(timeout=20)
        if output["type"] == "websocket.close":
            return output.get("code")
        message = json.loads(output["text"])
        socket.messages.append(message)
        _check_message(message)
        if message["type"] in ANSWERS:
            return None


def _check_message(message: dict) -> None:
    kind = message["type"]
    if kind == "error":
        assert isinstance(message["code"], str) and message["code"]
        assert isinstance(message["message"], str) and message["message"]
    elif kind == "invalid":
        assert message["errors"] and all(
            isinstance(texts, list) and all(isinstance(t, str) for t in texts)
            for texts in message["errors"].values()
        )
    else:
        assert kind in {"started", "run", "frames", "finished", "unavailable"}, message


async def _send(socket: Socket, frame: tuple[str, str | bytes]) -> None:
    # Straight to the application: send_to() refuses empty frames, which browsers can send.
    kind, data = frame
    await socket.communicator.send_input({"type": "websocket.receive", kind: data})


async def _conversation(application, path: str, user, sent: list) -> None:
    async with Socket(application, path, user) as socket:
        assert socket.connected
        if "/runs/" in path:
            code = await _answer(socket)  # the run it follows, or a refusal
            assert code is None or code in DOCUMENTED_CLOSES, code
            if code is not None:
                return
        for frame in sent:
            await _send(socket, frame)
            code = await _answer(socket)
            if code is not None:
                assert code in DOCUMENTED_CLOSES, code
                return
    await settle()


@pytest.fixture
def no_errors_logged(caplog):
    caplog.set_level(logging.ERROR)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


# --- The tests --------------------------------------------------------------------------------


@pytest.mark.usefixtures("upstream", "acme_key", "no_errors_logged")
def test_random_messages_to_the_start_socket(application, bob):
    @FUZZ
    @given(sent=st.lists(frames, min_size=1, max_size=4))
    @example(sent=[("text", "[" * 5_000)])  # deeper than Python recurses, under 64 KiB
    @example(sent=[("text", ""), ("bytes", b"")])
    def case(sent):
        async_to_sync(_conversation)(application, "/ws/playground/", bob, sent)

    case()
    assert not Run.objects.filter(status="running").exists()


def _finished_run(application, bob) -> int:
    async def run() -> int:
        async with Socket(application, "/ws/playground/", bob) as socket:
            run_id = await socket.start(HELLO)
            await socket.until("finished")
        await settle()
        return run_id

    return async_to_sync(run)()


@pytest.mark.usefixtures("upstream", "acme_key", "no_errors_logged")
def test_random_messages_to_a_run_socket(application, bob, charlie):
    run_id = _finished_run(application, bob)
    mine = f"/ws/runs/{run_id}/"

    @FUZZ
    @given(
        path=st.just(mine) | st.sampled_from(["/ws/runs/987654/", "/ws/runs/0/"]),
        query=queries,
        user=st.just(bob) | st.just(charlie),
        sent=st.lists(frames, min_size=1, max_size=3),
    )
    # Known hostile resumes, always tried: digits int() refuses, a sequence past bigint.
    @example(path=mine, query="after=²", user=bob, sent=[("text", "{}")])
    @example(path=mine, query="after=" + "9" * 30, user=bob, sent=[("bytes", b"")])
    # More digits than int() takes (4,300): the resume starts past the end, no error.
    @example(path=mine, query="after=" + "9" * 4400, user=bob, sent=[("text", "{}")])
    def case(path, query, user, sent):
        async_to_sync(_conversation)(application, f"{path}?{query}", user, sent)

    case()
    assert not Run.objects.filter(status="running").exists()


def _all_finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(item) for item in value.values())
    if isinstance(value, list):
        return all(_all_finite(item) for item in value)
    return True


@pytest.mark.usefixtures("upstream", "acme_key", "no_errors_logged")
def test_a_stop_for_every_kind_of_run_id_is_answered(application, bob):
    # "stop" takes no run id: whatever the message names, it stops this socket's run or none.
    # A message carrying NaN or Infinity is not JSON at all (the strict parser refuses it).
    @FUZZ
    @given(run=scalars | json_values)
    def case(run):
        expected = "not_running" if _all_finite(run) else "bad_message"

        async def one():
            async with Socket(application, "/ws/playground/", bob) as socket:
                await socket.send({"action": "stop", "run": run})
                assert await _answer(socket) is None
                assert socket.messages[-1]["code"] == expected

        async_to_sync(one)()

    case()
    assert not Run.objects.exists()


async def test_anonymous_sockets_are_closed_whatever_they_send(application):
    # Outside hypothesis (one example): what an anonymous socket sends is ignored.
    async with Socket(application, "/ws/playground/") as socket:
        await socket.communicator.send_to(text_data=json.dumps({"action": "start", "form": HELLO}))
        assert await socket.closed_with() == CLOSE_UNAUTHENTICATED
    assert not await sync_to_async(Run.objects.exists)()
