"""The upstream client's network backend (runs.core.network), against real sockets.

Each test runs a small server on loopback in the test's own event loop, under both loops
rtdash runs on (asyncio's, and uvloop's as uvicorn deploys it): TLS with a certificate made
here, backpressure on a large answer read slowly, a pooled connection the server closed, the
three timeouts, a cancel, and a server that resets the connection mid-answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import ssl

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


def test_a_server_that_never_answers_is_a_read_timeout(run):
    async def never_answer(reader, writer):
        await _read_request(reader)
        await asyncio.sleep(5)

    async def scenario():
        async with Server(never_answer) as server, _client(read=0.2) as client:
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
    async def never_answer(reader, writer):
        await _read_request(reader)
        await asyncio.sleep(5)

    async def scenario():
        async with Server(never_answer) as server, _client(read=0.3) as client:
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
        writer.transport.abort()

    async def scenario():
        async with Server(reset_midway) as server, _client() as client:
            await client.get(f"http://127.0.0.1:{server.port}/")

    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        run(scenario())
