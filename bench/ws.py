"""Websocket clients for benchmarks, as the playground page is one: a logged-in session, a
minimal RFC 6455 client, and a follower that starts a run (or watches one) and reads it to
its end. Used by bench/relay.py and bench/load.py."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
from collections.abc import Callable

from bench.harness import Stack
from simulator.testing import HOST

# A member of the harness's team "bench" and `count` logged-in sessions of theirs, as the
# login page would leave them; prints one session key a line.
SETUP_USER = """
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from runs.models import Membership, Team
user, _ = get_user_model().objects.get_or_create(username="bench-browser")
user.set_unusable_password()
user.save()
Membership.objects.get_or_create(user=user, team=Team.objects.get(slug="bench"))
for _ in range({count}):
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    print(session.session_key)
"""


def log_in(stack: Stack, count: int = 1) -> list[str]:
    """`count` session cookies (`sessionid` values) of a member of the stack's team."""
    return stack.manage("shell", "-c", SETUP_USER.format(count=count)).splitlines()[-count:]


class Socket:
    """A minimal websocket client (RFC 6455, text frames). `receive` says when each message
    was complete, on `clock` (time.monotonic_ns unless told otherwise)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        clock: Callable[[], float] = time.monotonic_ns,
    ) -> None:
        self.reader, self.writer, self.clock = reader, writer, clock

    @classmethod
    async def connect(
        cls, port: int, path: str, cookie: str, clock: Callable[[], float] = time.monotonic_ns
    ) -> Socket:
        reader, writer = await asyncio.open_connection(HOST, port)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://{HOST}:{port}\r\nCookie: sessionid={cookie}\r\n\r\n"
        )
        writer.write(request.encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise RuntimeError(f"websocket refused: {head[:80]!r}")
        return cls(reader, writer, clock)

    async def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x81, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def receive(self) -> tuple[str, float] | None:
        """(text, clock reading when complete), answering pings; None when closed."""
        parts = []
        while True:
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(length)
            opcode = first & 0x0F
            if opcode == 0x8:
                return None
            if opcode == 0x9:  # ping → pong (masked, as a client must)
                mask = os.urandom(4)
                data = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
                self.writer.write(struct.pack("!BB", 0x8A, 0x80 | len(payload)) + mask + data)
                continue
            parts.append(payload)
            if first & 0x80:
                return b"".join(parts).decode(), self.clock()

    def close(self) -> None:
        self.writer.close()


class Stream:
    """What one socket saw of its run."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.sequences: list[int] = []
        self.status = ""
        self.finished: dict = {}  # the `finished` message: status, errorCode, errorMessage, ...
        self.run_id: int | None = None


# latency(frame's data as RunTools sent it, the clock when its message arrived) → ms or None.
Latency = Callable[[str, float], "float | None"]


async def follow(
    socket: Socket,
    latency: Latency,
    *,
    form: dict | None = None,
    delay: float = 0.0,
    result: Stream | None = None,
    on_started: Callable[[int], None] | None = None,
) -> Stream:
    """Start a run with `form` (after `delay` seconds), or with no form watch the run the
    socket was opened on (`ws/runs/<id>/`), and read it to its end; closes the socket."""
    result = result if result is not None else Stream()
    try:
        await asyncio.sleep(delay)
        if form is not None:
            await socket.send(json.dumps({"action": "start", "form": form}))
        while True:
            received = await socket.receive()
            if received is None:
                break
            text, at = received
            message = json.loads(text)
            if message["type"] == "frames":
                for sequence, _event, data in message["frames"]:
                    result.sequences.append(sequence)
                    value = latency(data, at)
                    if value is not None:
                        result.latencies.append(value)
            elif message["type"] == "started":
                result.run_id = message["run"]
                if on_started is not None:
                    on_started(message["run"])
            elif message["type"] == "finished":
                result.status, result.finished = message["status"], message
                break
            elif message["type"] in ("error", "invalid"):
                raise RuntimeError(f"refused: {message}")
    finally:
        socket.close()
    return result


def sequence_faults(stream: Stream, expected: int) -> tuple[int, int, int]:
    """(missing, duplicated, out of order) sequences of 1..expected in what a socket got."""
    seen = set(stream.sequences)
    missing = len(set(range(1, expected + 1)) - seen)
    duplicated = len(stream.sequences) - len(seen)
    disordered = sum(
        1 for a, b in zip(stream.sequences, stream.sequences[1:], strict=False) if b <= a
    )
    return missing, duplicated, disordered
