"""The upstream client's sockets, on the event loop's own transports.

httpx's default network backend goes through anyio: every read and write opens a cancel
scope for its timeout, and TLS runs in Python over a memory BIO. That cost ~100 µs of CPU per
upstream call (docs/performance.md, "The upstream client's cookies and sockets"), more than
any single step of rtdash's own. This backend speaks httpcore's network interface with an
asyncio Protocol instead: a read returns what has arrived without any timer when data is
waiting, a timeout is one timer handle, and TLS is the loop's own (`start_tls`; uvloop's is
compiled). What anyio did that still matters is kept: connecting tries an address of each
family in turn (happy eyeballs), a closed stream is aborted, not flushed, and every resource
stays bounded: a connection stops reading from its socket once `READ_HIGH_WATER` bytes wait
unread, and a write waits for the socket to drain.

A deployment whose environment names an outbound proxy (HTTPS_PROXY and the like) gets
httpx's own transports, which route through it (`transport` returns None then).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import urllib.request
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

# Unread bytes a connection holds before it stops reading from its socket (and resumes below
# the low mark): httpcore reads 64 KiB at a time.
READ_HIGH_WATER = 256 * 1024
READ_LOW_WATER = 64 * 1024
# Connecting: how long one address is given before the next is tried alongside it (anyio's
# and RFC 8305's figure).
HAPPY_EYEBALLS_DELAY = 0.25


class _Connection(asyncio.Protocol):
    """One socket's state: what has arrived and not been read, and who waits for what."""

    def __init__(self) -> None:
        # The socket's own transport. Reading is paused and resumed on it even once TLS runs
        # above it: paused at TLS's level, uvloop drops decrypted bytes it still holds when
        # the server then closes without TLS's close message. Paused below, the close is
        # only seen after everything sent before it.
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
        # httpcore's HTTP/1.1 connection reads from one task at a time.
        assert self._readable is None, "two reads at once on one connection"
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


def _message(error: BaseException) -> str:
    return str(error) or type(error).__name__


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
            raise httpcore.ReadError(_message(connection.lost))
        return b""  # the peer closed the connection: httpcore decides what that means

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        connection = self._connection
        if self._transport.is_closing():
            raise httpcore.WriteError("The connection is closed.")
        self._transport.write(buffer)
        if connection.writing_paused and not self._transport.is_closing():
            # Once the transport has drained below its low mark, all of `buffer` is on its
            # way: nothing more is written here, so writing cannot pause again.
            await connection.wait_drained(timeout)
        if connection.lost is not None:
            raise httpcore.WriteError(_message(connection.lost))

    async def aclose(self) -> None:
        # Aborted, as anyio's streams end: nothing an HTTP/1.1 connection still has queued is
        # worth flushing, and a graceful close would hold the socket (past the pool's count)
        # until the server read what is left, or for TLS until it answered the close.
        self._transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        connection = self._connection
        if connection.buffer or connection.ended or self._transport.is_closing():
            # Bytes before the handshake would be read as if they came through TLS; a closed
            # connection would leave the handshake waiting.
            self._transport.abort()
            raise httpcore.ConnectError("The server spoke or closed before the TLS handshake.")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, connection, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self._transport.abort()
            raise httpcore.ConnectTimeout("The TLS handshake timed out.") from None
        except OSError as error:  # ssl.SSLError among them
            self._transport.abort()
            raise httpcore.ConnectError(_message(error)) from error
        except BaseException:
            self._transport.abort()
            raise
        return _Stream(transport, connection)

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
        try:
            async with asyncio.timeout(timeout):
                sock = await _connected_socket(host, port, local_address)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"Connecting to {host}:{port} timed out.") from None
        except (OSError, UnicodeError) as error:  # UnicodeError: a name IDNA cannot encode
            raise httpcore.ConnectError(_message(error)) from error
        return await _stream_on(sock, socket_options, nodelay=True)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[tuple] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        with _closed_on_failure(sock):
            try:
                async with asyncio.timeout(timeout):
                    await loop.sock_connect(sock, path)
            except TimeoutError:
                raise httpcore.ConnectTimeout(f"Connecting to {path} timed out.") from None
        return await _stream_on(sock, socket_options, nodelay=False)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _addresses(host: str, port: int, local_address: str | None) -> list[tuple]:
    """The host's addresses to try, alternating between families (IPv6, IPv4, …) as
    getaddrinfo ordered each; only the local address's family when one is given."""
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    if local_address:
        family = socket.AF_INET6 if ":" in local_address else socket.AF_INET
        found = [info for info in found if info[0] == family]
    return interleaved(found)


def interleaved(infos: list[tuple]) -> list[tuple]:
    """getaddrinfo's answers, one of each family in turn, each family in its own order."""
    by_family: dict[int, list[tuple]] = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    queues, ordered = list(by_family.values()), []
    while any(queues):
        ordered += [queue.pop(0) for queue in queues if queue]
    return ordered


async def _connected_socket(host: str, port: int, local_address: str | None) -> socket.socket:
    """A socket connected to the first of the host's addresses to answer, each tried
    HAPPY_EYEBALLS_DELAY after the one before, or as soon as every earlier one has failed: an
    address family whose packets are silently dropped costs a quarter second, not the connect
    timeout. However the race ends (won, lost, cancelled, timed out), every other attempt is
    cancelled and its socket closed, at once or as soon as it ends."""
    addresses = await _addresses(host, port, local_address)
    if not addresses:
        raise OSError(f"No address found for {host}.")
    attempts: list[asyncio.Task] = []
    running: set[asyncio.Task] = set()
    errors: list[BaseException] = []
    winner = None
    try:
        for index, info in enumerate(addresses):
            attempt = asyncio.ensure_future(_attempt(info, local_address))
            attempts.append(attempt)
            running.add(attempt)
            last = index == len(addresses) - 1
            winner = await _first_connected(running, errors, None if last else HAPPY_EYEBALLS_DELAY)
            if winner is not None:
                return winner
    finally:
        # Without awaiting: a cancel arriving during an await here would lose the winner.
        for attempt in attempts:
            attempt.cancel()  # a running attempt closes its own socket
            attempt.add_done_callback(functools.partial(_close_unless, winner))
    problems = "; ".join(dict.fromkeys(_message(error) for error in errors))
    raise OSError(f"Could not connect to {host}:{port}: {problems}")


def _close_unless(winner: socket.socket | None, attempt: asyncio.Task) -> None:
    """An attempt's socket closed, unless it won: it connected before it could be cancelled."""
    if not attempt.cancelled() and attempt.exception() is None and attempt.result() is not winner:
        attempt.result().close()


async def _first_connected(
    running: set[asyncio.Task], errors: list[BaseException], wait: float | None
) -> socket.socket | None:
    """The socket of the first attempt in `running` to connect, within `wait` seconds (None:
    until every attempt has ended); None when they have all failed or the time is up.
    Finished attempts leave `running`, their errors go to `errors`."""
    deadline = None if wait is None else asyncio.get_running_loop().time() + wait
    while running:
        remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
        if remaining is not None and remaining <= 0:
            return None
        done, _ = await asyncio.wait(
            running, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
        )
        for attempt in done:
            running.discard(attempt)
            if attempt.exception() is None:
                return attempt.result()
            errors.append(attempt.exception())
    return None


async def _attempt(info: tuple, local_address: str | None) -> socket.socket:
    family, kind, proto, _name, address = info
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        if local_address:
            sock.bind((local_address, 0))
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def _stream_on(
    sock: socket.socket, options: Iterable[tuple] | None, *, nodelay: bool
) -> _Stream:
    """The connected socket under a transport and a _Connection (closed if that fails)."""
    with _closed_on_failure(sock):
        if nodelay:
            # Each request's head and body are written separately: sent at once, not held
            # back waiting for the previous segment's acknowledgement.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option in options or ():
            sock.setsockopt(*option)
        loop = asyncio.get_running_loop()
        transport, connection = await loop.create_connection(_Connection, sock=sock)
    return _Stream(transport, connection)


@contextlib.contextmanager
def _closed_on_failure(sock: socket.socket):
    """The socket closed if what follows fails; an OSError raised as httpcore's ConnectError."""
    try:
        yield
    except OSError as error:
        sock.close()
        raise httpcore.ConnectError(_message(error)) from error
    except BaseException:
        sock.close()
        raise


def _proxy_in_environment() -> bool:
    # The variables httpx routes by (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, either case).
    return bool({"http", "https", "all"} & set(urllib.request.getproxies()))


def transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport | None:
    """httpx's own transport (its request mapping and its exceptions), its connection pool
    built as httpx builds it for a client without a proxy, on this backend; None when the
    environment names a proxy, for the client to build its own transports that use it."""
    if _proxy_in_environment():
        return None
    ssl_context = httpx.create_ssl_context()
    made = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits)
    made._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return made
