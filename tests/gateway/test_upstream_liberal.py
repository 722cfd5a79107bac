"""Liberal in what the upstream sends: answers RunTools may give that the simulator does not
(a compressed stream, `event: message` frames, usage on other frames or in other spellings,
statuses of its run list, repeated headers), each from a real HTTP server on loopback that
answers as scripted, through the gateway, and recorded as RunTools meant them.
"""

from __future__ import annotations

import gzip
import json
from http.server import BaseHTTPRequestHandler

import pytest
from asgiref.sync import sync_to_async

from runs.models import Run, Thread
from tests.helpers import loopback_upstream, stream_body

pytestmark = pytest.mark.django_db(transaction=True)


class _Scripted(BaseHTTPRequestHandler):
    """Answers every request with the server's `answer` (status, headers, body) and keeps
    each request's headers in `asked`."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.asked.append(dict(self.headers.items()))
        status, headers, body = self.server.answer
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def scripted(settings, upstream):
    # After `upstream` (the simulator, which the gateway fixture points at): this one wins.
    with loopback_upstream(settings, _Scripted) as server:
        server.asked = []
        yield server


def sse(*frames: tuple[str | None, dict | str]) -> bytes:
    """An SSE body: each frame's `event:` line (None: none) and its data."""
    blocks = []
    for event, data in frames:
        text = data if isinstance(data, str) else json.dumps(data)
        lines = ([f"event: {event}"] if event is not None else []) + [f"data: {text}"]
        blocks.append("\n".join(lines) + "\n\n")
    return "".join(blocks).encode()


STREAM_HEADERS = [("Content-Type", "text/event-stream")]
COMPLETED = {
    "type": "run_completed",
    "runId": "run_1",
    "threadId": "thr_1",
    "status": "completed",
    "result": "Hi.",
    "usage": {"inputTokens": 12, "outputTokens": 3},
}


async def run_through(gateway, body: dict) -> tuple[object, bytes, Run]:
    response = await gateway("POST", "/v1/run", body)
    raw = await stream_body(response) if response.streaming else response.content
    from runs.pipeline.start import settle

    await settle()
    run = await sync_to_async(Run.objects.order_by("-pk").first)()
    return response, raw, run


async def test_a_compressed_stream_reaches_the_client_readable_and_is_recorded(gateway, scripted):
    plain = sse(("run_started", {"type": "run_started", "runId": "run_1"}), (None, COMPLETED))
    scripted.answer = (200, [*STREAM_HEADERS, ("Content-Encoding", "gzip")], gzip.compress(plain))
    response, raw, run = await run_through(gateway, {"agent": "a", "prompt": "hi"})
    # rtdash asked for the stream uncompressed, and decoded it when it came compressed anyway.
    assert scripted.asked[0]["Accept-Encoding"] == "identity"
    assert raw == plain
    assert "Content-Encoding" not in response
    assert run.status == "completed"
    assert (run.input_tokens, run.output_tokens) == (12, 3)


async def test_a_stream_with_a_byte_order_mark_keeps_its_first_frame(gateway, scripted):
    # The mark would make the first line's field `\ufeffdata`, which names nothing.
    body = b"\xef\xbb\xbf" + sse((None, {"note": "first"}), ("run_completed", COMPLETED))
    scripted.answer = (200, STREAM_HEADERS, body)
    _response, raw, run = await run_through(gateway, {"agent": "a", "prompt": "hi"})
    assert raw == body  # relayed as sent, mark included
    assert run.status == "completed"
    assert run.frame_count == 2
    stored = await sync_to_async(list)(run.events.order_by("sequence").values_list("event", "data"))
    assert stored[0] == ("message", '{"note": "first"}')


async def test_event_message_is_the_default_name_and_the_type_names_the_frame(gateway, scripted):
    scripted.answer = (200, STREAM_HEADERS, sse(("message", COMPLETED)))
    _response, _raw, run = await run_through(gateway, {"agent": "a", "prompt": "hi"})
    assert run.status == "completed"
    assert run.error_code == ""
    assert run.output_tokens == 3


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        # The last frame carrying usage wins, whatever the frame.
        (
            (
                "error",
                {
                    "type": "error",
                    "error": {"code": "x", "message": "m"},
                    "usage": {"inputTokens": 7, "outputTokens": 2},
                },
            ),
            (7, 2),
        ),
        (
            (
                "assistant_message",
                {
                    "type": "assistant_message",
                    "content": "Hi.",
                    "usage": {"inputTokens": 8, "outputTokens": 4},
                },
            ),
            (8, 4),
        ),
        (
            (
                "assistant_message_delta",
                {
                    "type": "assistant_message_delta",
                    "delta": "!",
                    "usage": {"inputTokens": 9, "outputTokens": 5},
                },
            ),
            (9, 5),
        ),
    ],
)
async def test_usage_is_the_last_frame_that_carries_it(gateway, scripted, last, expected):
    early = {
        "type": "run_started",
        "runId": "run_1",
        "usage": {"inputTokens": 1, "outputTokens": 1},
    }
    scripted.answer = (200, STREAM_HEADERS, sse(("run_started", early), last))
    _response, _raw, run = await run_through(gateway, {"agent": "a", "prompt": "hi"})
    assert (run.input_tokens, run.output_tokens) == expected


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"input_tokens": 1480, "output_tokens": 322}, (1480, 322)),
        ({"prompt_tokens": 10, "completion_tokens": 4}, (10, 4)),
        ({"inputTokens": "1480", "outputTokens": "322"}, (1480, 322)),
        ({"inputTokens": "-3", "outputTokens": "3.5"}, (None, None)),
        ({"inputTokens": 1e300, "outputTokens": -1}, (None, None)),
        # More digits than int() takes (4,300), and more than any count has.
        ({"inputTokens": "9" * 5000, "outputTokens": "9" * 17}, (None, None)),
    ],
)
async def test_usage_in_other_spellings_is_read_and_nonsense_is_not(
    gateway, scripted, usage, expected
):
    answer = {"data": {"runId": "run_1", "status": "completed", "result": "ok", "usage": usage}}
    scripted.answer = (200, [("Content-Type", "application/json")], json.dumps(answer).encode())
    _response, _raw, run = await run_through(
        gateway, {"agent": "a", "prompt": "hi", "stream": False}
    )
    assert run.status == "completed"
    assert (run.input_tokens, run.output_tokens) == expected


async def test_infinite_usage_is_no_count_and_no_crash(gateway, scripted):
    # Python's JSON parser reads Infinity; a count it is not.
    body = (
        b'{"data": {"runId": "run_1", "status": "completed", "usage": {"inputTokens": Infinity}}}'
    )
    scripted.answer = (200, [("Content-Type", "application/json")], body)
    response, _raw, run = await run_through(
        gateway, {"agent": "a", "prompt": "hi", "stream": False}
    )
    assert response.status_code == 200
    assert run.status == "completed"
    assert run.input_tokens is None


@pytest.mark.parametrize("word", ["running", "queued", "in_progress"])
async def test_a_run_not_over_yet_is_followed_not_taken_as_completed(gateway, scripted, word):
    answer = {"data": {"runId": "run_1", "status": word, "threadId": "thr_1"}}
    scripted.answer = (200, [("Content-Type", "application/json")], json.dumps(answer).encode())
    _response, _raw, run = await run_through(
        gateway, {"agent": "a", "prompt": "hi", "stream": False}
    )
    assert run.status == "dispatched"
    assert run.follow_next_at is not None


@pytest.mark.parametrize("status", [404, 429, 500])
async def test_a_refused_run_makes_no_thread_and_no_turn(gateway, scripted, status):
    envelope = {"error": {"code": "not_found", "message": "No such thread."}}
    scripted.answer = (
        status,
        [("Content-Type", "application/json")],
        json.dumps(envelope).encode(),
    )
    body = {"agent": "a", "prompt": "hi", "threadId": "thr_typo", "stream": False}
    response, _raw, run = await run_through(gateway, body)
    assert response.status_code == status
    assert run.status == "failed"
    assert run.upstream_thread_id == "thr_typo"  # still in the history, with what was asked
    assert run.thread_id is None
    assert not await Thread.objects.filter(upstream_id="thr_typo").aexists()


async def test_a_taken_run_is_a_turn_of_its_thread(gateway, scripted):
    answer = {"data": {"runId": "run_1", "status": "completed", "threadId": "thr_ok"}}
    scripted.answer = (200, [("Content-Type", "application/json")], json.dumps(answer).encode())
    _response, _raw, run = await run_through(
        gateway, {"agent": "a", "prompt": "hi", "stream": False}
    )
    thread = await Thread.objects.aget(upstream_id="thr_ok")
    assert run.thread_id == thread.pk
    assert thread.turns == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_repeated_headers_are_joined_not_dropped(gateway, scripted, stream):
    content_type = "text/event-stream" if stream else "application/json"
    body = sse((None, COMPLETED)) if stream else json.dumps({"data": COMPLETED}).encode()
    headers = [
        ("Content-Type", content_type),
        ("Vary", "Accept"),
        ("Vary", "Accept-Encoding"),
        ("Link", "</v1/threads/thr_1>; rel=thread"),
        ("Link", "</v1/run/run_1>; rel=run"),
    ]
    scripted.answer = (200, headers, body)
    response, _raw, _run = await run_through(
        gateway, {"agent": "a", "prompt": "hi", "stream": stream}
    )
    assert response["Vary"] == "Accept, Accept-Encoding"
    assert response["Link"] == "</v1/threads/thr_1>; rel=thread, </v1/run/run_1>; rel=run"
    # The upstream's Content-Type replaces Django's default; it is not joined to it.
    assert response["Content-Type"] == content_type


async def test_a_lone_surrogate_from_the_upstream_is_mended_in_rtdash_s_copy(gateway, scripted):
    body = b'{"data": {"runId": "run_1", "status": "completed", "result": "\\ud800 hi"}}'
    scripted.answer = (200, [("Content-Type", "application/json")], body)
    _response, raw, run = await run_through(
        gateway, {"agent": "a", "prompt": "hi", "stream": False}
    )
    assert raw == body  # the client gets RunTools' bytes
    assert run.status == "completed"
    assert run.result == "\ufffd hi"


async def test_a_refused_run_in_a_known_thread_is_shown_in_it_but_adds_no_turn(gateway, scripted):
    answer = {"data": {"runId": "run_1", "status": "completed", "threadId": "thr_known"}}
    scripted.answer = (200, [("Content-Type", "application/json")], json.dumps(answer).encode())
    await run_through(gateway, {"agent": "a", "prompt": "hi", "stream": False})
    envelope = {"error": {"code": "rate_limited", "message": "Slow down."}}
    scripted.answer = (429, [("Content-Type", "application/json")], json.dumps(envelope).encode())
    body = {"agent": "a", "prompt": "again", "threadId": "thr_known", "stream": False}
    _response, _raw, refused = await run_through(gateway, body)
    thread = await Thread.objects.aget(upstream_id="thr_known")
    assert refused.thread_id == thread.pk
    assert thread.turns == 1
