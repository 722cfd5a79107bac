"""The gateway's own ASGI handler (rtdash.gateway_handler), driven as a server drives it."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from django.core import signals

from rtdash.gateway_handler import GatewayASGIHandler
from runs.gateway.views import settle
from runs.models import Run
from runs.pipeline import start
from tests.gateway.asgi import exchange, http_scope, the_run_once_completed

pytestmark = pytest.mark.django_db(transaction=True)


class _Seen(list):
    runs_at_start: list[int]


@pytest.fixture
def request_signals():
    """(signal name, thread) for every request_started / request_finished sent, and how many
    runs were recorded when the request started."""
    seen = _Seen()
    runs_at_start: list[int] = []

    def started(**kwargs):
        seen.append(("started", threading.current_thread()))
        runs_at_start.append(Run.objects.count())

    def finished(**kwargs):
        seen.append(("finished", threading.current_thread()))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    seen.runs_at_start = runs_at_start
    yield seen
    signals.request_started.disconnect(started)
    signals.request_finished.disconnect(finished)


def _scope(path: str, token: str, method: str = "POST") -> dict:
    return http_scope(path, method=method, token=token)


@pytest.fixture(params=["django-handler", "run-endpoint"])
def handler(request):
    """Django's handler for the gateway, and rtdash's application, which serves runs from
    rtdash.run_endpoint (and hands the rest of /v1/ to the same handler)."""
    if request.param == "django-handler":
        return GatewayASGIHandler()
    return request.getfixturevalue("application")


async def call(handler, method: str, path: str, token: str, body: dict | None = None) -> dict:
    raw = json.dumps(body).encode() if body is not None else b""
    message = {"type": "http.request", "body": raw, "more_body": False}
    answer = await exchange(handler, _scope(path, token, method), [message])
    await settle()
    return answer


async def test_a_run_is_answered_and_the_request_signals_come_in_pairs(
    handler, upstream, acme_key, acme_token, request_signals
):
    _token, plaintext = acme_token
    body = {"agent": "support-chat", "prompt": "Hello", "stream": False}
    answer = await call(handler, "POST", "/v1/run", plaintext, body)
    assert answer["status"] == 200
    assert json.loads(answer["body"])["data"]["status"] == "completed"
    assert await Run.objects.filter(status="completed").acount() == 1
    # request_started went to the sync thread with the token lookup, not to a hop of its own;
    # it was still sent once, before the run was recorded, off the event loop's thread.
    assert [name for name, _ in request_signals] == ["started", "finished"]
    assert request_signals.runs_at_start == [0]
    assert all(thread is not threading.main_thread() for _, thread in request_signals)


async def test_a_stream_through_the_handler_keeps_its_frames(
    handler, upstream, acme_key, acme_token, request_signals
):
    _token, plaintext = acme_token
    body = {"agent": "support-chat", "prompt": "Hello"}
    answer = await call(handler, "POST", "/v1/run", plaintext, body)
    assert answer["status"] == 200
    assert answer["body"].count(b"\n\n") == (await Run.objects.aget()).frame_count > 3
    assert [name for name, _ in request_signals] == ["started", "finished"]


async def test_a_request_that_never_authenticates_still_gets_both_signals(
    handler, upstream, acme_token, request_signals
):
    _token, plaintext = acme_token
    answer = await call(handler, "PUT", "/v1/run", plaintext)
    assert answer["status"] == 405
    assert [name for name, _ in request_signals] == ["started", "finished"]


async def test_a_json_runs_record_is_finished_only_after_its_response_has_left(
    handler, upstream, acme_key, acme_token
):
    """Finishing the record (a trip to the sync thread, Python work holding the GIL) while the
    answer is still on its way would delay the caller; it starts once the answer is sent."""
    _token, plaintext = acme_token
    body = json.dumps({"agent": "support-chat", "prompt": "Hello", "stream": False}).encode()
    seen_when_sent = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        if message["type"] == "http.response.body" and not message.get("more_body"):
            status = await Run.objects.values_list("status", flat=True).aget()
            seen_when_sent.append((status, len(start._FINISHING)))

    await handler(_scope("/v1/run", plaintext), receive, send)
    await settle()
    assert seen_when_sent == [("running", 0)]
    assert await Run.objects.values_list("status", flat=True).aget() == "completed"


async def test_a_client_that_leaves_before_its_json_answer_still_gets_the_run_recorded(
    handler, upstream, acme_key, acme_token
):
    _token, plaintext = acme_token
    simulate = {"hangSeconds": 0.5}
    run = {"agent": "support-chat", "prompt": "Hello", "stream": False}
    body = json.dumps({**run, "metadata": {"simulate": simulate}}).encode()
    sent = []
    messages = [
        {"type": "http.disconnect"},
        {"type": "http.request", "body": body, "more_body": False},
    ]

    async def receive():
        if len(messages) == 1:
            await asyncio.sleep(0.1)  # hang up while the upstream is still working
        return messages.pop()

    async def send(message):
        sent.append(message)

    await handler(_scope("/v1/run", plaintext), receive, send)
    if isinstance(handler, GatewayASGIHandler):
        assert sent == []  # Django's handler cancels the answer of a client that has left
    # (rtdash.run_endpoint sends it for the server to drop: see its docstring)
    recorded = await the_run_once_completed()
    assert (recorded.status, recorded.output_tokens > 0) == ("completed", True)
