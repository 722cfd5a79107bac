"""rtdash under uvicorn, the server the README recommends for production: the gateway and the
playground's websocket work there as they do under daphne (which the other live tests use)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect

from runs.models import Run, RunEvent
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.live import RtdashServer, wait_for_finished_run

pytestmark = pytest.mark.django_db(transaction=True)

RUN = {"agent": "code-assistant", "prompt": "Run the tests and summarize failures."}


@pytest.fixture
def server(upstream, acme_key):
    with RtdashServer(upstream.url, TEST_ENCRYPTION_KEY, server="uvicorn") as running:
        yield running


def test_the_gateway_answers_and_records_json_and_streamed_runs(server, acme_token):
    _token, plaintext = acme_token
    headers = {"X-API-Key": plaintext}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post("/v1/run", json={**RUN, "stream": False}, headers=headers)
        with client.stream("POST", "/v1/run", json=RUN, headers=headers) as streamed:
            assert streamed.headers["content-type"].startswith("text/event-stream")
            raw = b"".join(streamed.iter_raw())
    assert answer.status_code == 200
    assert answer.json()["data"]["status"] == "completed"
    json_run = Run.objects.get(pk=answer.headers["X-Rtdash-Run-Id"])
    assert (json_run.status, json_run.stream) == ("completed", False)
    assert b"event: run_completed" in raw
    stream_run = wait_for_finished_run()
    assert (stream_run.status, stream_run.stream) == ("completed", True)
    stored = RunEvent.objects.filter(run=stream_run).count()
    assert stored == stream_run.frame_count == raw.count(b"\n\n")


def test_a_playground_run_streams_over_the_websocket(server, client, bob):
    client.force_login(bob)  # a real session row, which the server reads
    cookie = client.cookies["sessionid"].value
    messages = asyncio.run(_run_in_the_playground(server, cookie))
    kinds = [message["type"] for message in messages]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert messages[-1]["status"] == "completed"
    frames = [frame for message in messages if message["type"] == "frames"
              for frame in message["frames"]]  # fmt: skip
    run = Run.objects.get(pk=messages[0]["run"])
    assert [frame[0] for frame in frames] == list(range(1, run.frame_count + 1))
    assert (run.source, run.user, run.status) == ("playground", bob, "completed")


async def _run_in_the_playground(server: RtdashServer, cookie: str) -> list[dict]:
    address = server.url.replace("http://", "ws://") + "/ws/playground/"
    headers = {"Cookie": f"sessionid={cookie}"}
    async with connect(address, origin=server.url, additional_headers=headers) as socket:
        form = {**RUN, "stream": "on"}
        await socket.send(json.dumps({"action": "start", "form": form}))
        messages: list[dict] = []
        async with asyncio.timeout(30):
            while not messages or messages[-1]["type"] != "finished":
                message = json.loads(await socket.recv())
                if message["type"] in ("started", "frames", "finished"):
                    messages.append(message)
    return messages
