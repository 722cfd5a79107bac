"""The /v1/ gateway keeps Django's request protections without its middleware stack: Host
checked against ALLOWED_HOSTS, HTTPS redirect and HSTS (issue 13, item 8), and a check that
notices when Django's copied request handling changes."""

from __future__ import annotations

import json

import pytest

from rtdash import gateway_handler
from rtdash.gateway_handler import GatewayASGIHandler, drifted_django_methods
from runs.checks import check_gateway_handler_matches_django
from tests.gateway.asgi import exchange, http_scope

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def production(settings):
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["rtdash.example"]


@pytest.fixture(params=["django-handler", "run-endpoint"])
def entry(request):
    """(method, path, app maker): a /v1/ request for Django's handler
    (rtdash.gateway_handler), and a run, which rtdash's application serves from
    rtdash.run_endpoint."""
    if request.param == "django-handler":
        # A handler per call: SecurityMiddleware reads its settings when the handler is made.
        return "GET", "/v1/agents", GatewayASGIHandler
    application = request.getfixturevalue("application")
    return "POST", "/v1/run", lambda: application


async def call(entry, *, host: str, scheme: str = "http", token: str = "") -> dict:
    """One request through the gateway's handler as an ASGI server sends it."""
    method, path, make_app = entry
    scope = http_scope(path, method=method, token=token, host=host, scheme=scheme)
    message = {"type": "http.request", "body": b"", "more_body": False}
    return await exchange(make_app(), scope, [message])


async def test_it_refuses_a_host_outside_allowed_hosts(production, acme_token, entry):
    _token, plaintext = acme_token
    answer = await call(entry, host="evil.example", token=plaintext)
    assert answer["status"] == 400
    assert answer["headers"]["content-type"] == "application/json"
    error = json.loads(answer["body"])["error"]
    assert error["code"] == "bad_request"
    assert "evil.example" not in answer["body"].decode()


async def test_it_answers_an_allowed_host(production, entry):
    answer = await call(entry, host="rtdash.example")
    assert answer["status"] == 401  # no token: the request got past the Host check


async def test_it_redirects_plain_http_to_https(production, settings, entry):
    settings.SECURE_SSL_REDIRECT = True
    answer = await call(entry, host="rtdash.example")
    assert answer["status"] == 301
    _method, path, _app = entry
    assert answer["headers"]["location"] == "https://rtdash.example" + path


async def test_it_sends_hsts_over_https(production, settings, entry):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    answer = await call(entry, host="rtdash.example", scheme="https")
    assert answer["status"] == 401
    assert answer["headers"]["strict-transport-security"].startswith("max-age=3600")
    assert answer["headers"]["x-content-type-options"] == "nosniff"


def test_the_copied_django_methods_are_the_ones_the_copy_follows():
    # Fails on a Django whose ASGIHandler.handle (or the others) changed: re-read the copy.
    assert drifted_django_methods() == []
    assert check_gateway_handler_matches_django() == []


def test_the_check_refuses_a_django_that_drifted(monkeypatch):
    changed = {**gateway_handler.COPIED_FROM_DJANGO, "ASGIHandler.handle": "0" * 64}
    monkeypatch.setattr(gateway_handler, "COPIED_FROM_DJANGO", changed)
    [error] = check_gateway_handler_matches_django()
    assert error.id == "rtdash.E005"
    assert "ASGIHandler.handle" in error.msg
