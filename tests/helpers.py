"""What tests share beyond conftest's fixtures: logging in, and runs to read.

Each is used by more than one test module; a test module imports helpers from here, never
from another test module.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from runs.core import upstream
from runs.gateway.views import settle
from runs.models import Run
from tests.conftest import PASSWORD

# When make_run's runs started, unless a test says otherwise.
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def login(client: Client, user) -> Client:
    """Log `user` in with their password, through the real authentication backends."""
    assert client.login(username=user.username, password=PASSWORD)
    return client


def make_run(team, **fields) -> Run:
    """A finished run written directly: for tests of reading and filtering, not recording."""
    values = {
        "source": "gateway",
        "agent": "support-chat",
        "prompt": "Where is my order?",
        "status": "completed",
        "result": "It ships tomorrow.",
        "started_at": NOW,
        "input_tokens": 100,
        "output_tokens": 20,
        "duration_ms": 1200,
        "cost_status": "unpriced",
    }
    values.update(fields)
    return Run.objects.create(team=team, **values)


def gateway_run(token: str, body: dict) -> Run:
    """A real run through rtdash's gateway to the simulator, recorded as in production."""

    async def call():
        response = await AsyncClient().post(
            "/v1/run",
            json.dumps(body),
            content_type="application/json",
            headers={"X-API-Key": token},
        )
        if response.streaming:
            async for _chunk in response.streaming_content:
                pass
        await settle()
        return response

    response = async_to_sync(call)()
    return Run.objects.get(pk=response["X-Rtdash-Run-Id"])


def shown_run_ids(response) -> list[int]:
    """The run ids a runs-list page shows, in order."""
    return [int(pk) for pk in re.findall(r'data-run="(\d+)"', response.content.decode())]


async def stream_body(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


@contextmanager
def loopback_upstream(
    settings, handler: type[BaseHTTPRequestHandler]
) -> Iterator[ThreadingHTTPServer]:
    """A loopback HTTP server answering with `handler`, as rtdash's RunTools (`settings` is
    pytest-django's fixture), with fresh upstream clients pointed at it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.RUNTOOLS_API_URL = f"http://127.0.0.1:{server.server_address[1]}/v1"
    upstream.use_transport(None)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        upstream.use_transport(None)
