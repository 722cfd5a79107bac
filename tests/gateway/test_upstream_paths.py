"""What reaches RunTools from the gateway: ids stay inside their path segment (issue 13,
item 7), and no cookie set on one answer rides on a later request.

The upstream here is a real HTTP server on loopback that records the request target exactly
as it arrived on the wire, so a test sees what RunTools would have seen: the path, any
query, the Cookie header, and that nothing was sent at all for a refused id. Every answer
sets a cookie, as a load balancer with sticky sessions in front of RunTools would.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest
from django.test import Client

from runs.core import upstream
from runs.history.threads import thread_path
from tests.helpers import loopback_upstream

pytestmark = pytest.mark.django_db(transaction=True)


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str]]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.command, self.path))
        self.server.cookies.append(self.headers.get("Cookie"))
        body = json.dumps({"data": {"ok": True}}).encode()
        self.send_response(200)
        self.send_header("Set-Cookie", f"affinity=node-{len(self.server.seen)}; Path=/")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def upstream_server(settings):
    """A loopback upstream that answers 200 to anything, setting a cookie, and lists what it
    was asked (`seen`) and the Cookie header each request carried (`cookies`)."""
    with loopback_upstream(settings, _Recorder) as server:
        server.seen, server.cookies = [], []
        yield server


@pytest.fixture
def recorder(upstream_server):
    return upstream_server.seen


@pytest.fixture
def gateway(acme_key, acme_token):
    _token, plaintext = acme_token
    client = Client()

    def call(method: str, path: str, body: bytes = b"") -> object:
        return client.generic(
            method, path, body, content_type="application/json", headers={"X-API-Key": plaintext}
        )

    return call


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/agents/%2e%2e"),
        ("GET", "/v1/agents/%2E"),
        ("GET", "/v1/threads/%2e%2e"),
        ("GET", "/v1/threads/%2e%2e/events"),
        ("PATCH", "/v1/threads/%2e%2e"),
        ("DELETE", "/v1/threads/%2e"),
        ("GET", "/v1/run/threads/%2e%2e"),
        ("GET", "/v1/run/%2e%2e"),
        ("GET", "/v1/run/%2E"),
        ("DELETE", "/v1/run/threads/%2e"),
        ("POST", "/v1/agents/%2e%2e/run"),
    ],
)
def test_it_refuses_dot_segment_ids_without_calling_upstream(recorder, gateway, method, path):
    body = b'{"prompt": "hi", "stream": false}' if method == "POST" else b'{"title": "t"}'
    response = gateway(method, path, body if method in ("POST", "PATCH") else b"")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert recorder == []


def test_strangers_get_a_401_not_a_hint_about_ids(recorder, acme_key):
    response = Client().get("/v1/agents/%2e%2e", headers={"X-API-Key": "rtd_nope"})
    assert response.status_code == 401
    assert recorder == []


@pytest.mark.parametrize(
    ("method", "path", "upstream_target"),
    [
        ("GET", "/v1/agents/x%3Fsmuggled=1", "/v1/agents/x%3Fsmuggled%3D1"),
        ("GET", "/v1/agents/a%23b", "/v1/agents/a%23b"),
        ("GET", "/v1/agents/100%25", "/v1/agents/100%25"),
        ("GET", "/v1/agents/..x", "/v1/agents/..x"),
        ("GET", "/v1/threads/t%3F%26a/events", "/v1/threads/t%3F%26a/events"),
        ("PATCH", "/v1/threads/x%3Farchived=1", "/v1/threads/x%3Farchived%3D1"),
        ("DELETE", "/v1/threads/x%3Fy", "/v1/threads/x%3Fy"),
        ("GET", "/v1/run/threads/x%3Fagent=other", "/v1/run/threads/x%3Fagent%3Dother"),
        ("POST", "/v1/agents/x%3Fy=1/run", "/v1/agents/x%3Fy%3D1/run"),
    ],
)
def test_an_id_reaches_upstream_as_one_segment(recorder, gateway, method, path, upstream_target):
    body = b'{"prompt": "hi", "stream": false}' if method == "POST" else b'{"title": "t"}'
    response = gateway(method, path, body if method in ("POST", "PATCH") else b"")
    assert response.status_code == 200, response.content
    assert recorder == [(method, upstream_target)]


def test_a_real_query_string_is_still_forwarded(recorder, gateway):
    response = gateway("GET", "/v1/run/threads?agent=code-assistant&limit=5")
    assert response.status_code == 200
    assert recorder == [("GET", "/v1/run/threads?agent=code-assistant&limit=5")]


def test_the_history_pages_thread_path_is_one_segment():
    assert thread_path("..") == "/threads/%2E%2E"
    assert thread_path("x?agent=y#z") == "/threads/x%3Fagent%3Dy%23z"
    assert thread_path("a/b") == "/threads/a%2Fb"


def test_endpoint_encodes_each_segment_whole():
    assert upstream.endpoint("agents", "x?y=1", "run") == "/agents/x%3Fy%3D1/run"
    assert upstream.endpoint("threads", ".") == "/threads/%2E"
    assert upstream.endpoint("threads", "thr_abc-1.2") == "/threads/thr_abc-1.2"


async def test_no_cookie_from_one_answer_rides_on_a_later_request(
    upstream_server, async_client, acme_key, acme_token, globex_key, globex_token
):
    # One event loop, so one pooled upstream client, carries both teams' calls: a cookie kept
    # from acme's answers would go to RunTools on globex's requests.
    upstream.client().cookies.set("planted", "by-code")  # nor can code add one
    for _token, plaintext in (acme_token, acme_token, globex_token):
        response = await async_client.get("/v1/agents", headers={"X-API-Key": plaintext})
        assert response.status_code == 200
        assert "set-cookie" not in response  # nor is it passed on to the caller
    assert upstream_server.cookies == [None, None, None]
    await async_client.post(
        "/v1/run",
        b'{"agent": "a", "prompt": "hi", "stream": false}',
        content_type="application/json",
        headers={"X-API-Key": globex_token[1]},
    )
    assert upstream_server.cookies == [None, None, None, None]
