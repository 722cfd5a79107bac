"""The upstream client's sockets, on the event loop's own transports.

httpx's default network backend goes through anyio: every read and write opens a cancel
scope for its timeout, and TLS runs in Python over a memory BIO. That cost ~100 µs of CPU per
upstream call (docs/performance.md, "The upstream client's cookies and sockets"), more than
any single step of rtdash's own. This backend speaks httpcore's network
interface with an asyncio Protocol instead: a read returns what has arrived without any timer
when data is waiting, a timeout is one timer handle, and TLS is the loop's own (`start_tls`;
uvloop's is compiled).

Every resource stays bounded: a connection stops reading from its socket once
`READ_HIGH_WATER` bytes wait unread, and writes wait for the transport to drain.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

# Unread bytes a connection holds before it stops reading from its socket (and resumes below
# the low mark): httpcore reads 64 KiB at a time.
READ_HIGH_WATER = 256 * 1024
READ_LOW_WATER = 64 * 1024


class _Connection(asyncio.Protocol):
    """One socket's state: what has arrived and not been read, and who waits for what."""

    def __init__(self) -> None:
        # The transport reading is paused and resumed on (TLS's once it is started).
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.ended = False  # the peer sent EOF or the connection is gone
        self.lost: Exception | None = None
        self.reading_paused = False
        self.writing_paused = False
        self._readable: asyncio.Future | None = None
        self._drained: asyncio.Future | None = None

    # --- the loop's callbacks ---------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_HIGH_WATER and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        _wake(self._readable)

    def eof_received(self) -> bool:
        self.ended = True
        _wake(self._readable)
        return False  # close our side too: HTTP/1.1 has nothing to send after the peer's EOF

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.lost = exc
        _wake(self._readable)
        _wake(self._drained)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self._drained)

    # --- waiting ------------------------------------------------------------------------------

    async def wait_readable(self, timeout: float | None) -> None:
        self._readable = asyncio.get_running_loop().create_future()
        try:
            await _within(self._readable, timeout, httpcore.ReadTimeout)
        finally:
            self._readable = None

    async def wait_drained(self, timeout: float | None) -> None:
        self._drained = asyncio.get_running_loop().create_future()
        try:
            await _within(self._drained, timeout, httpcore.WriteTimeout)
        finally:
            self._drained = None

    def take(self, max_bytes: int) -> bytes:
        if len(self.buffer) <= max_bytes:
            data = bytes(self.buffer)
            self.buffer.clear()
        else:
            data = bytes(self.buffer[:max_bytes])
            del self.buffer[:max_bytes]
        if self.reading_paused and len(self.buffer) < READ_LOW_WATER and not self.ended:
            self.reading_paused = False
            self.transport.resume_reading()
        return data


def _wake(waiter: asyncio.Future | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def _within(waiter: asyncio.Future, timeout: float | None, expired: type[Exception]):
    """Await `waiter`, failing it with `expired` after `timeout` seconds (None: no limit).
    The timer fails the future rather than cancelling the task, so a cancel from outside (a
    run being stopped) still arrives as a cancel."""
    if timeout is None:
        await waiter
        return
    timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter, expired)
    try:
        await waiter
    finally:
        timer.cancel()


def _expire(waiter: asyncio.Future, expired: type[Exception]) -> None:
    if not waiter.done():
        waiter.set_exception(expired("timed out"))


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, connection: _Connection) -> None:
        self._transport = transport
        self._connection = connection

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        connection = self._connection
        if not connection.buffer and not connection.ended:
            await connection.wait_readable(timeout)
        if connection.buffer:
            return connection.take(max_bytes)
        if connection.lost is not None:
            raise httpcore.ReadError(str(connection.lost) or type(connection.lost).__name__)
        return b""  # the peer closed the connection: httpcore decides what that means

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        connection = self._connection
        if self._transport.is_closing():
            raise httpcore.WriteError("The connection is closed.")
        self._transport.write(buffer)
        while connection.writing_paused and not self._transport.is_closing():
            await connection.wait_drained(timeout)
        if connection.lost is not None:
            raise httpcore.WriteError(str(connection.lost) or type(connection.lost).__name__)

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport,
                    self._connection,
                    ssl_context,
                    server_hostname=server_hostname,
                )
        except TimeoutError:
            self._transport.abort()
            raise httpcore.ConnectTimeout("The TLS handshake timed out.") from None
        except OSError as error:  # ssl.SSLError among them
            self._transport.abort()
            raise httpcore.ConnectError(str(error)) from error
        # Reading is paused and resumed on the TLS transport from now on: it passes the
        # pressure on to the socket's.
        self._connection.transport = transport
        return _Stream(transport, self._connection)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # httpcore asks this of an idle pooled connection: readable then means the server
            # has closed it (or sent something it should not have), so it is not reused.
            return bool(self._connection.buffer) or self._connection.ended
        names = {
            "ssl_object": "ssl_object",
            "client_addr": "sockname",
            "server_addr": "peername",
            "socket": "socket",
        }
        if info in names:
            return self._transport.get_extra_info(names[info])
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on asyncio transports (see the module's docstring)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[tuple] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await loop.create_connection(
                    _Connection, host, port, local_addr=local
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"Connecting to {host}:{port} timed out.") from None
        except OSError as error:
            raise httpcore.ConnectError(str(error)) from error
        _apply_options(transport, socket_options)
        return _Stream(transport, connection)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[tuple] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await loop.create_unix_connection(_Connection, path)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"Connecting to {path} timed out.") from None
        except OSError as error:
            raise httpcore.ConnectError(str(error)) from error
        _apply_options(transport, socket_options)
        return _Stream(transport, connection)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _apply_options(transport: asyncio.Transport, options: Iterable[tuple] | None) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # Each request's head and body are written separately: sent at once, not held back
        # waiting for the previous segment's acknowledgement.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for option in options or ():
        sock.setsockopt(*option)


def transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's own transport (its request mapping and its exceptions), its connection pool
    built as httpx builds it for a client without a proxy, on this backend."""
    made = httpx.AsyncHTTPTransport(limits=limits)
    made._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return made
