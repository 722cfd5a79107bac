"""The playground's websockets as tests drive them: a browser tab's socket on rtdash's ASGI
application (through `WebsocketCommunicator`), and the runs and frames they look at."""

from __future__ import annotations

import asyncio
import contextlib
import json

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from runs.core.validation import validate_run
from runs.models import Run, RunEvent
from runs.pipeline.reader import READERS
from runs.pipeline.recording import start_run

ORIGIN = b"http://127.0.0.1"
HELLO = {"agent": "support-chat", "prompt": "My invoice is wrong", "stream": "on"}
# The simulator's slow agent: a run that is still streaming while a test looks at it.
SLOW = {"agent": "slow-poke", "prompt": "Take your time", "stream": "on"}


def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


class Socket:
    """A logged-in (or not) browser tab's websocket."""

    def __init__(self, application, path: str, user=None, origin: bytes = ORIGIN) -> None:
        self.application, self.path, self.user, self.origin = application, path, user, origin
        self.communicator: WebsocketCommunicator | None = None
        self.messages: list[dict] = []

    async def __aenter__(self) -> Socket:
        headers = [(b"origin", self.origin), (b"host", b"127.0.0.1")]
        if self.user is not None:
            headers.append((b"cookie", await sync_to_async(_session_cookie)(self.user)))
        self.communicator = WebsocketCommunicator(self.application, self.path, headers=headers)
        self.connected, self.code = await self.communicator.connect()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.communicator.disconnect()

    async def send(self, message: dict) -> None:
        await self.communicator.send_json_to(message)

    async def receive(self, timeout: float = 10) -> dict:
        message = await self.communicator.receive_json_from(timeout=timeout)
        self.messages.append(message)
        return message

    async def closed_with(self, timeout: float = 5) -> int:
        while True:
            output = await self.communicator.receive_output(timeout=timeout)
            if output["type"] == "websocket.close":
                return output.get("code")
            self.messages.append(json.loads(output["text"]))

    async def until(self, kind: str, timeout: float = 20) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.receive(timeout=timeout)
                if message["type"] == kind:
                    return message

    async def until_frames(self, count: int, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while len(self.frames) < count:
                message = await self.receive(timeout=timeout)
                assert message["type"] != "finished", "the run ended first"

    async def start(self, form: dict) -> int:
        await self.send({"action": "start", "form": form})
        message = await self.until("started")
        return message["run"]

    @property
    def frames(self) -> list[list]:
        return [frame for m in self.messages if m["type"] == "frames" for frame in m["frames"]]

    def of_type(self, kind: str) -> list[dict]:
        return [message for message in self.messages if message["type"] == kind]


def stored(run_id: int) -> list[list]:
    events = RunEvent.objects.filter(run_id=run_id).order_by("sequence")
    return [list(row) for row in events.values_list("sequence", "event", "data")]


async def astored(run_id: int) -> list[list]:
    return await sync_to_async(stored)(run_id)


async def run_row(run_id: int) -> Run:
    return await Run.objects.aget(pk=run_id)


def with_simulate(form: dict, **simulate) -> dict:
    return {**form, "meta_key": ["simulate"], "meta_value": [json.dumps(simulate)]}


@contextlib.asynccontextmanager
async def reader_on_another_worker(run_id: int):
    """As seen from another worker: this process no longer knows the run's reader, which
    goes on reading and recording, so the block's sockets reach it only through the channel
    layer. Waits for the run's end on the way out."""
    reader = READERS.pop(run_id)
    try:
        yield reader
    finally:
        await reader.finished.wait()


def running_run(team, user) -> Run:
    """A run row in status running with no reader behind it (nothing goes upstream)."""
    body = {"agent": "support-chat", "prompt": "hi"}
    request = validate_run(body, json.dumps(body).encode())
    return start_run(team, request, source="playground", user=user)
