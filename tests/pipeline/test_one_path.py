"""The gateway and the playground record a run through the same path (issues 14 and 15).

Each upstream outcome is produced once for a gateway request and once for the playground's
`launch`, against the real simulator (its `metadata.simulate` faults) or, where the simulator
cannot produce the case, a real loopback server: the two Run rows must agree on every field
but their ids, source and times; and on both, the parts of a run's time add up to at most
its duration.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest
from asgiref.sync import sync_to_async

from runs.core import upstream
from runs.core.validation import validate_run
from runs.models import Run
from runs.pipeline.start import launch, settle

pytestmark = pytest.mark.django_db(transaction=True)


def _body(stream: bool, **simulate) -> dict:
    body = {"agent": "support-chat", "prompt": "Hello there", "stream": stream}
    if simulate:
        body["metadata"] = {"simulate": simulate}
    return body


OUTCOMES = {
    "json success": _body(False),
    "stream success": _body(True),
    "upstream 4xx": _body(False, status=429),
    "upstream 5xx on a stream request": _body(True, status=502),
    "error frame": _body(True, errorAfter=2),
    "cut stream": _body(True, cutAfter=2),
}

# Fields whose values must be equal on both paths.
SAME = (
    "status", "error_code", "error_message", "http_status", "agent", "prompt", "stream",
    "result", "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
    "total_tokens", "iterations", "frame_count", "execution_mode", "cost", "cost_status",
    "legacy_path",
)  # fmt: skip
# Fields that must be set (or unset) alike: their values differ from run to run.
PRESENT_ALIKE = (
    "upstream_ms", "overhead_ms", "duration_ms", "first_byte_at", "first_byte_ms",
    "finished_at", "upstream_run_id", "upstream_thread_id", "sandbox_id", "thread_id", "usage",
)  # fmt: skip


def _fields(run: Run) -> dict:
    fields = {name: getattr(run, name) for name in SAME}
    fields |= {f"{name} set": getattr(run, name) not in (None, "") for name in PRESENT_ALIKE}
    fields["frames stored"] = run.events.count()
    return fields


async def _through_gateway(async_client, token: str, body: dict) -> Run:
    await async_client.post(
        "/v1/run", json.dumps(body), content_type="application/json", headers={"X-API-Key": token}
    )
    await settle()
    return await Run.objects.filter(source="gateway").alatest("pk")


async def _through_playground(team, body: dict) -> Run:
    run_request = validate_run(body, json.dumps(body).encode())
    launched = await launch(team, run_request, source="playground")
    if launched.reader is not None:
        await launched.reader.task
    await settle()
    return await Run.objects.aget(pk=launched.run.pk)


def _assert_times_add_up(run: Run) -> None:
    assert run.overhead_ms is not None and run.duration_ms is not None
    assert run.overhead_ms <= run.duration_ms
    assert run.overhead_ms + (run.upstream_ms or 0) <= run.duration_ms


async def _both(async_client, acme, acme_token, body: dict) -> tuple[Run, Run]:
    _token, plaintext = acme_token
    through_gateway = await _through_gateway(async_client, plaintext, body)
    through_playground = await _through_playground(acme, body)
    return through_gateway, through_playground


async def _compare(gateway_run: Run, playground_run: Run) -> None:
    assert gateway_run.source == "gateway" and playground_run.source == "playground"
    gateway_fields = await sync_to_async(_fields)(gateway_run)
    playground_fields = await sync_to_async(_fields)(playground_run)
    assert gateway_fields == playground_fields
    _assert_times_add_up(gateway_run)
    _assert_times_add_up(playground_run)


@pytest.mark.usefixtures("upstream", "acme_key")
@pytest.mark.parametrize("body", OUTCOMES.values(), ids=OUTCOMES.keys())
async def test_both_paths_record_the_same_run(async_client, acme, acme_token, body):
    gateway_run, playground_run = await _both(async_client, acme, acme_token, body)
    await _compare(gateway_run, playground_run)


@pytest.mark.usefixtures("acme_key")
async def test_both_paths_record_a_connect_error_alike(async_client, acme, acme_token, settings):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    # Nothing listens there now: the connection is refused.
    settings.RUNTOOLS_API_URL = f"http://127.0.0.1:{port}/v1"
    upstream.use_transport(None)
    gateway_run, playground_run = await _both(async_client, acme, acme_token, _body(False))
    assert gateway_run.error_code == "upstream_unreachable"
    assert gateway_run.upstream_ms is None
    await _compare(gateway_run, playground_run)


def _serve_a_cut_body(listener: socket.socket, stop: threading.Event) -> None:
    """Answer each request with headers promising 1000 bytes, send 20, and hang up."""
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            connection, _address = listener.accept()
        except TimeoutError:
            continue
        with connection:
            connection.recv(65536)
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n" + b'{"data": {"status": '
            )


@pytest.fixture
def cut_body_upstream(settings):
    """A real loopback server whose JSON body breaks off: what the simulator cannot do."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    thread = threading.Thread(target=_serve_a_cut_body, args=(listener, stop), daemon=True)
    thread.start()
    settings.RUNTOOLS_API_URL = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    upstream.use_transport(None)
    yield
    stop.set()
    thread.join()
    listener.close()


@pytest.mark.usefixtures("acme_key", "cut_body_upstream")
async def test_both_paths_record_a_read_error_mid_body_alike(async_client, acme, acme_token):
    gateway_run, playground_run = await _both(async_client, acme, acme_token, _body(False))
    assert gateway_run.error_code == "upstream_disconnected"
    assert gateway_run.http_status == 200
    # The time the upstream took before breaking is recorded, on both paths.
    assert gateway_run.upstream_ms is not None
    await _compare(gateway_run, playground_run)
