"""The upstream client's network backend (runs.core.network), against real sockets.

Each test runs a small server on loopback (in the test's own event loop, or a thread where a
TLS server must misbehave), under both loops rtdash runs on (asyncio's, and uvloop's as
uvicorn deploys it): TLS with a certificate made here, a large answer read slowly over TLS
from a server that drops the connection without TLS's close message, backpressure, a pooled
connection the server closed, the timeouts, happy eyeballs past an address that never
answers, a cancel, a reset, what a closed connection leaves behind, a Unix socket, and an
outbound proxy named in the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import hashlib
import ipaddress
import socket
import ssl
import struct
import sys
import threading
import time
import warnings

import httpcore
import httpx
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from runs.core import network, upstream
from tests.conftest import ACME_KEY

LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=sorted(LOOPS))
def run(request):
    return LOOPS[request.param]


@pytest.fixture(autouse=True)
def _no_proxy_from_the_machine(monkeypatch):
    # A proxy named in the environment hands the client to httpx's own transports (one test
    # below names one on purpose): these tests are about rtdash's.
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


# A listener whose queue is full drops further connection attempts on Linux (the CI
# machines); elsewhere it may refuse them instead.
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="needs Linux's SYN drop")


def _client(**timeouts) -> httpx.AsyncClient:
    timeout = httpx.Timeout(5.0, **timeouts)
    return httpx.AsyncClient(timeout=timeout, transport=network.transport(httpx.Limits()))


def _answer(body: bytes, *, close: bool = False) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nContent-Type: text/plain\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length)


class Server:
    """A loopback HTTP/1.1 server whose answer to each request is `handle(reader, writer)`."""

    def __init__(self, handle, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handle = handle
        self.ssl_context = ssl_context
        self.connections = 0

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        try:
            await self.handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aexit__(self, *exc_info) -> None:
        self.server.close()


async def _answer_each(reader, writer) -> None:
    """Answer every request on the connection with its own body."""
    while True:
        try:
            body = await _read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(_answer(body))
        await writer.drain()


def _certificate(tmp_path, name: str = "localhost"):
    """A self-signed certificate for `name` and 127.0.0.1; (its file, a server context)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return cert_file, context


def test_the_upstream_client_uses_this_backend(run, settings, simulator):
    settings.RUNTOOLS_API_URL = simulator.url
    upstream.use_transport(None)

    async def scenario():
        response = await upstream.open_stream(ACME_KEY, "GET", "/agents")
        try:
            return response.status_code, response.extensions["network_stream"]
        finally:
            await response.aclose()
            await upstream.client().aclose()

    status, stream = run(scenario())
    assert status == 200
    assert isinstance(stream, network._Stream)


def test_https_with_a_trusted_certificate(run, tmp_path, monkeypatch):
    cert_file, server_context = _certificate(tmp_path)
    # As a deployment trusts a private CA: httpx reads SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))

    async def scenario():
        async with Server(_answer_each, server_context) as server, _client() as client:
            url = f"https://localhost:{server.port}/v1/run"
            first = await client.post(url, content=b"one")
            second = await client.post(url, content=b"two" * 50_000)
            version = first.extensions["network_stream"].get_extra_info("ssl_object").version()
            return first.content, second.content, version, server.connections

    first, second, version, connections = run(scenario())
    assert (first, second) == (b"one", b"two" * 50_000)
    assert version.startswith("TLS")
    assert connections == 1  # the second request reused the TLS connection


def test_https_refuses_a_certificate_for_another_name(run, tmp_path, monkeypatch):
    cert_file, server_context = _certificate(tmp_path, "elsewhere.example")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))

    async def scenario():
        async with Server(_answer_each, server_context) as server, _client() as client:
            await client.get(f"https://localhost:{server.port}/")

    with pytest.raises(httpx.ConnectError, match="certificate"):
        run(scenario())


def test_a_large_answer_read_slowly_is_held_bounded_and_arrives_whole(run):
    body = bytes(range(256)) * (16 * 1024)  # 4 MiB

    async def send_large(reader, writer):
        await _read_request(reader)
        writer.write(_answer(body))
        await writer.drain()

    async def scenario():
        async with Server(send_large) as server, _client() as client:
            request = client.build_request("GET", f"http://127.0.0.1:{server.port}/")
            response = await client.send(request, stream=True)
            await asyncio.sleep(0.3)  # the server writes all it can meanwhile
            held = len(response.extensions["network_stream"]._connection.buffer)
            received = hashlib.sha256()
            async for chunk in response.aiter_raw():
                received.update(chunk)
            await response.aclose()
            return held, received.hexdigest()

    held, digest = run(scenario())
    # Reading stops past the high-water mark; what one read of the socket brings may top it.
    assert 0 < held <= network.READ_HIGH_WATER + 512 * 1024
    assert digest == hashlib.sha256(body).hexdigest()


def test_a_pooled_connection_the_server_closed_is_not_reused(run):
    async def answer_once_then_close(reader, writer):
        body = await _read_request(reader)
        writer.write(_answer(body))  # keep-alive promised, then broken
        await writer.drain()

    async def scenario():
        async with Server(answer_once_then_close) as server, _client() as client:
            url = f"http://127.0.0.1:{server.port}/"
            first = await client.post(url, content=b"a")
            await asyncio.sleep(0.1)  # the server's close arrives while the connection idles
            second = await client.post(url, content=b"b")
            return first.content, second.content, server.connections

    assert run(scenario()) == (b"a", b"b", 2)


async def _never_answer(reader, writer) -> None:
    await _read_request(reader)
    await asyncio.sleep(5)


def test_a_server_that_never_answers_is_a_read_timeout(run):
    async def scenario():
        async with Server(_never_answer) as server, _client(read=0.2) as client:
            await client.post(f"http://127.0.0.1:{server.port}/", content=b"x")

    with pytest.raises(httpx.ReadTimeout):
        run(scenario())


def test_a_server_that_never_reads_is_a_write_timeout(run):
    async def never_read(reader, writer):
        await asyncio.sleep(5)

    async def scenario():
        async with Server(never_read) as server, _client(write=0.2) as client:
            await client.post(f"http://127.0.0.1:{server.port}/", content=b"x" * 64 * 1024 * 1024)

    with pytest.raises(httpx.WriteTimeout):
        run(scenario())


def test_nobody_listening_is_a_connect_error(run):
    async def scenario():
        async with Server(_answer_each) as server:
            port = server.port
        async with _client() as client:
            await client.get(f"http://127.0.0.1:{port}/")

    with pytest.raises(httpx.ConnectError):
        run(scenario())


def test_a_cancel_while_waiting_is_a_cancel_not_a_timeout(run):
    async def scenario():
        async with Server(_never_answer) as server, _client(read=0.3) as client:
            waiting = asyncio.ensure_future(client.post(f"http://127.0.0.1:{server.port}/"))
            await asyncio.sleep(0.1)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            await asyncio.sleep(0.4)  # past the read timeout: its timer must not fire
            return waiting.cancelled(), len(client._transport._pool.connections)

    assert run(scenario()) == (True, 0)


def test_a_reset_mid_answer_is_a_read_error(run):
    async def reset_midway(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(0.05)
        # A reset (SO_LINGER 0), not a close: an error, not a short answer.
        linger = struct.pack("ii", 1, 0)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        writer.transport.abort()

    async def scenario():
        async with Server(reset_midway) as server, _client() as client:
            await client.get(f"http://127.0.0.1:{server.port}/")

    with pytest.raises(httpx.ReadError):
        run(scenario())


# --- TLS from a server thread: what an asyncio server cannot be made to do ------------------


def _tls_server(server_context, answer) -> tuple[int, threading.Thread]:
    """A one-connection TLS server in a thread: it reads a request head, then `answer(tls)`."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        with listener:
            raw, _ = listener.accept()
            tls = server_context.wrap_socket(raw, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head:
                head += tls.recv(4096)
            answer(tls)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


@pytest.mark.parametrize("framing", ["length", "close"])
def test_a_large_tls_answer_read_slowly_survives_a_close_without_tls_close_message(
    run, tmp_path, monkeypatch, framing
):
    cert_file, server_context = _certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    body = bytes(range(256)) * (16 * 1024)  # 4 MiB

    def answer_then_drop(tls):
        framed = f"Content-Length: {len(body)}" if framing == "length" else "Connection: close"
        tls.sendall(f"HTTP/1.1 200 OK\r\n{framed}\r\n\r\n".encode() + body)
        socket.socket(fileno=tls.detach()).close()  # TCP closed, no TLS close message

    async def once():
        port, thread = _tls_server(server_context, answer_then_drop)
        url = f"https://localhost:{port}/"
        async with _client() as client, client.stream("GET", url) as response:
            received = hashlib.sha256()
            async for chunk in response.aiter_raw():
                received.update(chunk)
                # A slow reader: its connection pauses reading again and again, and the
                # server's close arrives during one of the pauses.
                await asyncio.sleep(0.005)
        thread.join(5)
        return received.hexdigest()

    async def scenario():
        # Whether the close lands in a pause is timing: three tries make a loss all but sure
        # to show (a loss came in about half of single tries with reading paused above TLS).
        return [await once() for _ in range(3)]

    assert run(scenario()) == [hashlib.sha256(body).hexdigest()] * 3


def test_an_abandoned_tls_stream_stops_the_server_at_once(run, tmp_path, monkeypatch):
    cert_file, server_context = _certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    seen = {}

    def stream_forever(tls):
        tls.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                tls.sendall(b"400\r\n" + b"e" * 1024 + b"\r\n")
                time.sleep(0.005)
        except OSError:
            seen["stopped"] = time.monotonic()

    async def scenario():
        port, thread = _tls_server(server_context, stream_forever)
        async with _client() as client:
            async with client.stream("GET", f"https://localhost:{port}/") as response:
                async for _chunk in response.aiter_raw():
                    break  # the gateway's client left: the answer is dropped
            seen["left"] = time.monotonic()
            await asyncio.to_thread(thread.join, 25)

    run(scenario())
    # Aborted, the connection is gone at once; closed gracefully it lingered ~30 s, uncounted
    # by the pool, while the server kept writing.
    assert seen["stopped"] - seen["left"] < 2


def test_a_tls_handshake_nobody_answers_is_a_connect_timeout(run, tmp_path, monkeypatch):
    cert_file, _server_context = _certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))

    async def silent(reader, writer):
        await asyncio.sleep(5)

    async def scenario():
        async with Server(silent) as server, _client(connect=0.3) as client:
            await client.get(f"https://localhost:{server.port}/")

    with pytest.raises(httpx.ConnectTimeout):
        run(scenario())


@pytest.mark.parametrize("before", ["speaks", "closes"])
def test_tls_is_refused_on_a_connection_the_server_spoke_or_closed_on_first(run, before):
    async def misbehave(reader, writer):
        if before == "speaks":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED")
            await writer.drain()
            await asyncio.sleep(5)

    async def scenario():
        async with Server(misbehave) as server:
            stream = await network.AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            await asyncio.sleep(0.2)  # what the server did arrives first
            context = ssl.create_default_context()
            try:
                await stream.start_tls(context, "localhost", timeout=5)
            finally:
                await stream.aclose()

    started = time.monotonic()
    with pytest.raises(httpcore.ConnectError, match="before the TLS handshake"):
        run(scenario())
    assert time.monotonic() - started < 3  # refused, not left to the handshake's timeout


# --- Connecting ---------------------------------------------------------------------------


@pytest.fixture
def unanswered_address():
    """127.0.0.1:port where a connection attempt is never answered: a listener whose queue
    one unaccepted connection fills, so the kernel drops further SYNs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())
    yield listener.getsockname()
    filler.close()
    listener.close()


@linux_only
def test_an_address_that_never_answers_costs_a_quarter_second_not_the_timeout(
    run, monkeypatch, unanswered_address
):
    async def scenario():
        async with Server(_answer_each) as server, _client(connect=10) as client:
            good = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", server.port))
            silent = (socket.AF_INET, socket.SOCK_STREAM, 6, "", unanswered_address)

            async def addresses(host, port, local_address):
                return [silent, good]  # as if the host's first address were unreachable

            monkeypatch.setattr(network, "_addresses", addresses)
            started = time.monotonic()
            response = await client.post("http://upstream.test/", content=b"hello")
            return response.content, time.monotonic() - started

    content, took = run(scenario())
    assert content == b"hello"
    assert network.HAPPY_EYEBALLS_DELAY <= took < 3


@linux_only
def test_an_address_that_never_answers_alone_is_a_connect_timeout(run, unanswered_address):
    host, port = unanswered_address

    async def scenario():
        async with _client(connect=0.3) as client:
            await client.get(f"http://{host}:{port}/")

    with pytest.raises(httpx.ConnectTimeout):
        run(scenario())


def test_addresses_alternate_between_families():
    def info(family, address):
        return (family, socket.SOCK_STREAM, 6, "", address)

    six_a, six_b = info(socket.AF_INET6, ("::1", 1)), info(socket.AF_INET6, ("::2", 1))
    four_a, four_b = info(socket.AF_INET, ("10.0.0.1", 1)), info(socket.AF_INET, ("10.0.0.2", 1))
    assert network.interleaved([six_a, six_b, four_a, four_b]) == [six_a, four_a, six_b, four_b]
    assert network.interleaved([four_a, four_b]) == [four_a, four_b]


def test_a_name_that_cannot_be_resolved_or_encoded_is_a_connect_error(run):
    async def scenario(host):
        async with _client() as client:
            await client.get(f"http://{host}/")

    for host in ("no-such-host.invalid", "a" * 64 + ".example"):  # the second: IDNA refuses
        with pytest.raises(httpx.ConnectError):
            run(scenario(host))


@pytest.mark.parametrize("answers", ["refused then good", "good then good"])
def test_a_connect_cancelled_at_any_step_leaves_no_socket_open(run, monkeypatch, answers):
    # asyncio's staggered_race (Python 3.11) could start an attempt after a cancel and leave
    # its socket connected, unclosed; a second review found it at a few steps on each loop.
    async def scenario():
        async with Server(_answer_each) as server:
            good = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", server.port))
            refused = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 1))
            first = refused if answers.startswith("refused") else good

            async def addresses(host, port, local_address):
                return [first, good]

            monkeypatch.setattr(network, "_addresses", addresses)
            backend = network.AsyncioBackend()
            for steps in range(12):
                connecting = asyncio.ensure_future(backend.connect_tcp("upstream.test", 80))
                for _ in range(steps):
                    await asyncio.sleep(0)
                connecting.cancel()
                try:
                    stream = await connecting
                except asyncio.CancelledError:
                    continue
                await stream.aclose()  # connected before the cancel landed: ours to close

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        run(scenario())
        gc.collect()
    unclosed = [w for w in caught if "unclosed <socket" in str(w.message)]
    assert [str(w.message) + str(w.source) for w in unclosed] == []


def test_a_write_timeout_leaves_no_socket_behind(run):
    body_size = 64 << 20
    seen = {}

    async def read_late(reader, writer):
        await asyncio.sleep(0.6)  # past the client's write timeout, then read to the end
        total = 0
        try:
            while chunk := await reader.read(1 << 20):
                total += len(chunk)
        except ConnectionResetError:
            pass
        seen["read"] = total

    async def scenario():
        async with Server(read_late) as server, _client(write=0.2) as client:
            with contextlib.suppress(httpx.WriteTimeout):
                await client.post(f"http://127.0.0.1:{server.port}/", content=b"x" * body_size)
            for _ in range(100):
                if "read" in seen:
                    break
                await asyncio.sleep(0.05)

    run(scenario())
    # The server got what the kernel held when the client gave up, then the end: the client's
    # socket was aborted, not left flushing the rest of the 64 MiB into a server that reads.
    assert seen["read"] < body_size // 2


def test_a_unix_socket(run, tmp_path):
    path = str(tmp_path / "upstream.sock")

    async def scenario():
        server = await asyncio.start_unix_server(
            lambda reader, writer: Server(_answer_each)._serve(reader, writer), path
        )
        async with server:
            transport = network.transport(httpx.Limits())
            transport._pool = httpcore.AsyncConnectionPool(
                uds=path, network_backend=network.AsyncioBackend()
            )
            async with httpx.AsyncClient(transport=transport) as client:
                response = await client.post("http://upstream/", content=b"over a unix socket")
                return response.content

    assert run(scenario()) == b"over a unix socket"


# --- An outbound proxy ----------------------------------------------------------------------


def test_a_proxy_named_in_the_environment_is_used(run, settings, monkeypatch):
    targets = []

    async def proxy(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        targets.append(head.split(b" ")[1].decode())
        writer.write(_answer(b'{"data": []}'))
        await writer.drain()

    async def scenario():
        async with Server(proxy) as server:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.port}")
            settings.RUNTOOLS_API_URL = "http://runtools.test/v1"
            upstream.use_transport(None)
            response = await upstream.call(ACME_KEY, "GET", "/agents")
            await upstream.client().aclose()
            return response.status_code

    assert run(scenario()) == 200
    assert targets == ["http://runtools.test/v1/agents"]  # asked of the proxy, in full
