"""Static files as rtdash serves them (RTDASH_SERVE_STATIC), and the policy on its pages: a real
daphne in a subprocess, with debug on and off, since the static handler answers before any
Django middleware runs."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.conftest import TEST_ENCRYPTION_KEY
from tests.live import RtdashServer

pytestmark = pytest.mark.django_db(transaction=True)

# Debug off needs production settings; the in-memory channel layer is enough for static files.
PRODUCTION = {
    "RTDASH_DEBUG": "0",
    "RTDASH_SECRET_KEY": secrets.token_urlsafe(48),
    "RTDASH_ALLOWED_HOSTS": "127.0.0.1",
    "RTDASH_SSL_REDIRECT": "0",
    "RTDASH_SILENCED_CHECKS": "rtdash.E003",
}
STATIC_FILES = [("/static/rtdash.css", "text/css"), ("/static/playground.js", "javascript")]


@pytest.fixture(params=["debug", "production"], scope="module")
def server(request):
    env = PRODUCTION if request.param == "production" else {}
    # No run is made here, so the upstream is an address nothing listens on.
    with RtdashServer("http://127.0.0.1:9", TEST_ENCRYPTION_KEY, **env) as running:
        yield running


@pytest.mark.parametrize(("path", "content_type"), STATIC_FILES)
def test_a_static_file_is_never_sniffed(server, path, content_type):
    response = httpx.get(server.url + path)
    assert response.status_code == 200
    assert content_type in response.headers["Content-Type"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"


def test_a_revalidated_static_file_keeps_its_headers(server):
    first = httpx.get(server.url + "/static/rtdash.css")
    again = httpx.get(
        server.url + "/static/rtdash.css",
        headers={"If-Modified-Since": first.headers["Last-Modified"]},
    )
    assert again.status_code == 304
    assert again.headers["X-Content-Type-Options"] == "nosniff"
    assert again.headers["Cache-Control"] == "no-cache"


def test_a_missing_static_file_is_a_plain_404(server):
    response = httpx.get(server.url + "/static/no-such-file.js")
    assert response.status_code == 404
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# --- The Content-Security-Policy on pages (rtdash/csp.py) ----------------------------------


def test_a_page_carries_the_policy(server):
    response = httpx.get(server.url + "/login/")
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'",
                      "frame-ancestors 'none'", "object-src 'none'"):  # fmt: skip
        assert directive in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_an_unknown_page_has_the_policy_except_as_the_debug_page(server, request):
    response = httpx.get(server.url + "/no-such-page/")
    assert response.status_code == 404
    if request.node.callspec.params["server"] == "debug":
        # Django's debug 404 page is made of inline styles, for the developer's eyes only.
        assert "Content-Security-Policy" not in response.headers
    else:
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
