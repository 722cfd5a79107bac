"""The run endpoints served from ASGI (rtdash.run_endpoint), driven through rtdash's own
ASGI application as a server drives it: the same answers as Django's handler gives, bodies
bounded as they arrive, and a stream let go of when its client leaves."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.testing import ApplicationCommunicator
from django.http import StreamingHttpResponse

from rtdash import run_endpoint
from rtdash.gateway_handler import GatewayASGIHandler
from rtdash.run_endpoint import RunEndpoint, RunRoute, match_run, send_stream
from runs.gateway.views import settle
from runs.models import Run
from tests.gateway.asgi import exchange, http_scope, the_run_once_completed

pytestmark = pytest.mark.django_db(transaction=True)

JSON_RUN = {"agent": "support-chat", "prompt": "Hello", "stream": False}
SLOW_STREAM = {
    "agent": "slow-poke",
    "prompt": "Take your time",
    "metadata": {"simulate": {"dripMs": 40}},
}


def _scope(path: str, token: str, extra_headers=()) -> dict:
    return http_scope(path, token=token, extra_headers=extra_headers)


async def _answer(app, scope, messages: list[dict]) -> dict:
    answer = await exchange(app, scope, messages)
    await settle()
    return answer


@pytest.fixture
def served_here(monkeypatch) -> list[str]:
    """The paths RunEndpoint served (a spy: it still serves them), so a test through the
    application knows its request did not go to Django's handler instead."""
    paths: list[str] = []
    serve = RunEndpoint.__call__

    async def spy(self, scope, receive, send, route):
        paths.append(scope["path"])
        return await serve(self, scope, receive, send, route)

    monkeypatch.setattr(RunEndpoint, "__call__", spy)
    return paths


def _whole(body: dict) -> list[dict]:
    return [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]


@pytest.mark.parametrize(
    ("method", "path", "root_path", "route"),
    [
        ("POST", "/v1/run", "", RunRoute(None)),
        ("POST", "/v1/agents/support-chat/run", "", RunRoute("support-chat")),
        ("GET", "/v1/run", "", None),  # its 405 comes from Django's handler
        ("POST", "/v1/agents/a/b/run", "", None),
        ("POST", "/v1/agents//run", "", None),
        ("POST", "/v1/run/threads", "", None),
        ("POST", "/v1/run", "/mounted", None),
    ],
)
def test_it_serves_only_the_run_paths(method, path, root_path, route):
    assert match_run({"method": method, "path": path, "root_path": root_path}) == route


def test_a_query_string_django_cannot_decode_is_left_to_its_handler():
    scope = {"method": "POST", "path": "/v1/run", "root_path": "", "query_string": b"a=%FF\xff"}
    assert match_run(scope) is None
    assert match_run({**scope, "query_string": b"a=b"}) == RunRoute(None)


async def test_a_json_run_gets_the_answer_django_s_handler_gives(
    application, served_here, upstream, acme_key, acme_token
):
    _token, plaintext = acme_token
    ours = await _answer(application, _scope("/v1/run", plaintext), _whole(JSON_RUN))
    django = await _answer(GatewayASGIHandler(), _scope("/v1/run", plaintext), _whole(JSON_RUN))
    assert served_here == ["/v1/run"]  # the first through RunEndpoint, the second not
    assert ours["status"] == django["status"] == 200
    assert ours["headers"].keys() == django["headers"].keys()
    assert ours["headers"]["x-content-type-options"] == "nosniff"
    first, second = [row async for row in Run.objects.order_by("pk").values_list("pk", "status")]
    assert ours["headers"]["x-rtdash-run-id"] == str(first[0])
    assert (first[1], second[1]) == ("completed", "completed")
    assert json.loads(ours["body"])["data"]["status"] == "completed"


async def test_a_legacy_run_is_served_with_the_agent_from_its_path(
    application, served_here, upstream, acme_key, acme_token
):
    _token, plaintext = acme_token
    path = "/v1/agents/support-chat/run"
    answer = await _answer(application, _scope(path, plaintext), _whole({"prompt": "Hello"}))
    assert answer["status"] == 200
    assert served_here == [path]
    run = await Run.objects.aget()
    assert (run.agent, run.legacy_path, run.status) == ("support-chat", True, "completed")


async def test_a_stream_is_relayed_whole(application, served_here, upstream, acme_key, acme_token):
    _token, plaintext = acme_token
    body = {"agent": "support-chat", "prompt": "Hello"}
    answer = await _answer(application, _scope("/v1/run", plaintext), _whole(body))
    assert answer["status"] == 200
    assert answer["headers"]["content-type"].startswith("text/event-stream")
    assert answer["headers"]["cache-control"] == "no-cache"
    assert served_here == ["/v1/run"]
    run = await Run.objects.aget()
    assert answer["body"].count(b"\n\n") == run.frame_count > 3


async def test_a_body_past_the_bound_is_refused_before_the_rest_arrives(
    application, upstream, acme_key, acme_token, settings
):
    """A chunked body declares no length: it is read one byte past the bound and refused
    then, without waiting for (or holding) the rest, which never comes here."""
    settings.RTDASH_MAX_BODY_BYTES = 2048
    _token, plaintext = acme_token
    chunk = {"type": "http.request", "body": b" " * 1024, "more_body": True}
    answer = await _answer(application, _scope("/v1/run", plaintext), [chunk, chunk, chunk])
    assert answer["status"] == 413
    assert json.loads(answer["body"])["error"]["code"] == "payload_too_large"
    assert not await Run.objects.aexists()


async def test_a_declared_length_past_the_bound_is_refused(
    application, upstream, acme_key, acme_token, settings
):
    settings.RTDASH_MAX_BODY_BYTES = 2048
    _token, plaintext = acme_token
    scope = _scope("/v1/run", plaintext, extra_headers=[(b"content-length", b"999999")])
    answer = await _answer(application, scope, _whole(JSON_RUN))
    assert answer["status"] == 413
    assert not await Run.objects.aexists()


async def test_a_client_that_leaves_during_its_body_gets_nothing_recorded(
    application, upstream, acme_key, acme_token
):
    _token, plaintext = acme_token
    communicator = ApplicationCommunicator(application, _scope("/v1/run", plaintext))
    await communicator.send_input({"type": "http.request", "body": b'{"agent"', "more_body": True})
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(10)
    assert communicator.output_queue.empty()  # nothing was answered
    assert not await Run.objects.aexists()


async def _leave_after_first_chunk(application, plaintext) -> float:
    """Start a slow stream and hang up once its first chunk has come; the seconds the app
    took to return after the hang-up."""
    communicator = ApplicationCommunicator(application, _scope("/v1/run", plaintext))
    await communicator.send_input(_whole(SLOW_STREAM)[0])
    start = await communicator.receive_output(10)
    assert start["status"] == 200
    first = await communicator.receive_output(10)
    assert first["body"]
    await communicator.send_input({"type": "http.disconnect"})
    loop = asyncio.get_running_loop()
    left = loop.time()
    await communicator.wait(10)
    return loop.time() - left


async def test_a_stream_s_client_leaving_is_let_go_and_the_run_still_recorded(
    application, upstream, acme_key, acme_token
):
    _token, plaintext = acme_token
    returned_after = await _leave_after_first_chunk(application, plaintext)
    # The app returned at once, not when the run ended (40 ms a frame, 50+ frames).
    assert returned_after < 1.0
    await settle()
    run = await Run.objects.aget()
    assert run.status == "completed"
    assert run.frame_count > 10
    assert await run.events.acount() == run.frame_count


async def test_a_stream_s_client_leaving_can_cancel_the_run(
    application, upstream, acme_key, acme_token, settings
):
    settings.RTDASH_CANCEL_ON_DISCONNECT = True
    _token, plaintext = acme_token
    await _leave_after_first_chunk(application, plaintext)
    await settle()
    run = await Run.objects.aget()
    assert run.status == "cancelled"
    assert run.frame_count < 20


async def test_a_refusal_is_the_envelope_and_is_logged(application, served_here, upstream, caplog):
    answer = await _answer(application, _scope("/v1/run", "rtd_unknown"), _whole(JSON_RUN))
    assert answer["status"] == 401
    assert served_here == ["/v1/run"]
    assert json.loads(answer["body"])["error"]["code"] == "invalid_token"
    assert any("Unauthorized: /v1/run" in record.getMessage() for record in caplog.records)
    assert not await Run.objects.aexists()


async def test_a_server_refusing_to_send_to_a_departed_client_is_no_error(
    application, upstream, acme_key, acme_token
):
    """ASGI 2.4 lets a server raise OSError from send() once its client has gone."""
    _token, plaintext = acme_token
    messages = _whole(JSON_RUN)

    async def receive():
        if messages:
            return messages.pop()
        return {"type": "http.disconnect"}

    async def send(message):
        raise OSError("the client has gone")

    await application(_scope("/v1/run", plaintext), receive, send)
    await settle()
    assert await Run.objects.values_list("status", flat=True).aget() == "completed"


async def test_a_client_that_leaves_before_the_first_chunk_is_let_go_too():
    """The watch for a departing client starts a moment after the stream's start, whether
    or not a chunk has come (here none ever does)."""
    closed = asyncio.Event()

    async def first_chunk_never_comes():
        try:
            await asyncio.Event().wait()
            yield b"never"
        finally:
            closed.set()

    sent = []

    async def send(message):
        sent.append(message["type"])

    async def receive():
        return {"type": "http.disconnect"}

    response = StreamingHttpResponse(first_chunk_never_comes())
    await asyncio.wait_for(send_stream(GatewayASGIHandler(), response, receive, send), timeout=5)
    assert closed.is_set()  # the body's iterator was closed: the ClientSink would let go
    assert sent == ["http.response.start"]


async def test_a_view_s_unexpected_error_still_gets_the_protections_headers(
    application, served_here, upstream, acme_key, acme_token, monkeypatch
):
    async def broken(request, agent_from_path):
        raise RuntimeError("a bug in the view")

    monkeypatch.setattr(run_endpoint.views, "answer_run", broken)
    _token, plaintext = acme_token
    answer = await _answer(application, _scope("/v1/run", plaintext), _whole(JSON_RUN))
    assert served_here == ["/v1/run"]
    assert answer["status"] == 500
    assert answer["headers"]["x-content-type-options"] == "nosniff"
    assert "referrer-policy" in answer["headers"]


async def test_a_server_cancelling_the_request_does_not_stop_its_run(
    application, served_here, upstream, acme_key, acme_token
):
    """Servers cancel what is still running when they shut down, and daphne a request whose
    client left a while ago: a run already recorded is still read to its end."""
    _token, plaintext = acme_token
    body = {**JSON_RUN, "metadata": {"simulate": {"hangSeconds": 0.5}}}
    messages = _whole(body)

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.Event().wait()

    async def send(message):
        pass

    serving = asyncio.ensure_future(application(_scope("/v1/run", plaintext), receive, send))
    for _ in range(100):  # until the run is recorded and upstream
        await asyncio.sleep(0.01)
        if await Run.objects.aexists():
            break
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    run = await the_run_once_completed()
    assert (run.status, run.output_tokens > 0) == ("completed", True)
    assert served_here == ["/v1/run"]


async def test_a_server_s_cancel_is_not_taken_for_the_client_leaving():
    """The watcher's cancel ends the stream quietly; a server's cancel arriving with it (a
    shutdown that also drops the connection) still ends the task."""
    sender: list[asyncio.Task] = []

    async def waits_forever():
        await asyncio.Event().wait()
        yield b"never"

    async def receive():
        sender[0].cancel()  # the server's cancel, as its client leaves
        return {"type": "http.disconnect"}

    async def send(message):
        pass

    response = StreamingHttpResponse(waits_forever())
    sender.append(asyncio.ensure_future(send_stream(GatewayASGIHandler(), response, receive, send)))
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(sender[0], timeout=5)
