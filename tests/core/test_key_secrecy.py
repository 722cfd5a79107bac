"""A team's RunTools key never shows on Django's debug 500 page or in the logs, even when a
bug blows up a run after rtdash has put the key on the outbound request (issue 13, item 2).

The bug is provoked for real: an httpx.MockTransport in place of the network raises a
non-httpx exception while the request (key on its headers) is being sent. The page is
rendered by Django's real handler with DEBUG on, the way `make run` serves it.
"""

from __future__ import annotations

import logging
import pickle

import httpx
import pytest
from django.test import Client

from runs.core import upstream
from tests.conftest import ACME_KEY

pytestmark = pytest.mark.django_db(transaction=True)

RUN_BODY = b'{"agent": "code-assistant", "prompt": "hi", "stream": false}'


class TransportBug(Exception):
    """What a bug deep in the HTTP stack looks like to rtdash: not an httpx.HTTPError."""


@pytest.fixture
def broken_transport():
    seen: list[httpx.Request] = []

    def explode(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise TransportBug("the transport broke while sending")

    upstream.use_transport(httpx.MockTransport(explode))
    yield seen
    upstream.use_transport(None)


@pytest.fixture
def debug_client(settings):
    settings.DEBUG = True
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False
    return Client(raise_request_exception=False)


def _assert_debug_page_without_key(response, seen, caplog) -> None:
    page = response.content.decode()
    # The bug happened after the key went on the request, and the page is the technical one,
    # with every frame's local variables: the test is only worth something if both hold.
    assert seen and seen[0].headers["X-API-Key"] == ACME_KEY
    assert response.status_code == 500
    assert "TransportBug" in page and "Local vars" in page
    assert ACME_KEY not in page
    logged = "\n".join(
        f"{record.getMessage()}\n{record.exc_text or ''}" for record in caplog.records
    )
    assert "TransportBug" in logged
    assert ACME_KEY not in logged


def test_it_keeps_the_key_off_the_debug_page_of_a_gateway_run(
    debug_client, acme_key, acme_token, broken_transport, caplog
):
    _token, plaintext = acme_token
    with caplog.at_level(logging.DEBUG):
        response = debug_client.post(
            "/v1/run", RUN_BODY, content_type="application/json", headers={"X-API-Key": plaintext}
        )
    _assert_debug_page_without_key(response, broken_transport, caplog)
    # The key was in a frame's locals, sealed: what the page shows of it is the mask.
    assert "SealedKey(****)" in response.content.decode()


def test_it_keeps_the_key_off_the_debug_page_of_a_gateway_proxy_call(
    debug_client, acme_key, acme_token, broken_transport, caplog
):
    _token, plaintext = acme_token
    with caplog.at_level(logging.DEBUG):
        response = debug_client.get("/v1/agents", headers={"X-API-Key": plaintext})
    _assert_debug_page_without_key(response, broken_transport, caplog)


def test_it_keeps_the_key_off_the_debug_page_of_a_playground_run(
    debug_client, acme_key, bob, broken_transport, caplog
):
    debug_client.force_login(bob)
    with caplog.at_level(logging.DEBUG):
        response = debug_client.post(
            "/playground/run", {"agent": "code-assistant", "prompt": "hi", "stream": ""}
        )
    _assert_debug_page_without_key(response, broken_transport, caplog)


def test_nan_metadata_is_a_400_before_any_key_is_used(
    debug_client, acme_key, acme_token, broken_transport
):
    _token, plaintext = acme_token
    body = b'{"agent": "a", "prompt": "hi", "stream": false, "metadata": {"a": NaN}}'
    response = debug_client.post(
        "/v1/run", body, content_type="application/json", headers={"X-API-Key": plaintext}
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "metadata.a"
    assert not broken_transport


def test_a_sealed_key_does_not_print_or_pickle(acme_key):
    from runs.core.crypto import SealedKey, encrypt

    sealed = SealedKey(encrypt(ACME_KEY))
    assert ACME_KEY not in repr(sealed) and ACME_KEY not in str(sealed)
    assert ACME_KEY not in f"{sealed!r} {sealed}"
    with pytest.raises(TypeError):
        pickle.dumps(sealed)
    assert sealed.reveal() == ACME_KEY
