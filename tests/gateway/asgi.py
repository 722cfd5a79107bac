"""Driving rtdash's ASGI apps in-process as a server drives them: a request's scope, one
whole exchange, and the run a departed client left behind (shared by the gateway handler,
run endpoint and protection tests)."""

from __future__ import annotations

import asyncio

from asgiref.testing import ApplicationCommunicator

from runs.models import Run
from runs.pipeline.start import settle


def http_scope(
    path: str,
    *,
    method: str = "POST",
    token: str = "",
    host: str = "testserver",
    scheme: str = "http",
    extra_headers=(),
) -> dict:
    headers = [(b"host", host.encode()), (b"content-type", b"application/json")]
    if token:
        headers.append((b"x-api-key", token.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [*headers, *extra_headers],
        "client": ("127.0.0.1", 5000),
        "server": (host, 443 if scheme == "https" else 80),
    }


async def exchange(app, scope: dict, messages: list[dict]) -> dict:
    """Send `messages`, read the whole answer and wait for the app to return: its status,
    headers (names lowercased) and body."""
    communicator = ApplicationCommunicator(app, scope)
    for message in messages:
        await communicator.send_input(message)
    start = await communicator.receive_output(10)
    body = b""
    while True:
        message = await communicator.receive_output(10)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(10)
    headers = {name.decode().lower(): value.decode() for name, value in start["headers"]}
    return {"status": start["status"], "headers": headers, "body": body}


async def the_run_once_completed() -> Run:
    """The one recorded run, once it has been read to its end (the request that started it
    may be gone: its client left, or the server cancelled it), waiting up to ~5 s."""
    for _ in range(100):
        await settle()
        if await Run.objects.filter(status="completed").aexists():
            break
        await asyncio.sleep(0.05)
    return await Run.objects.aget()
