"""Hostile input is a 4xx with a reason, never a 500 or a traceback (issue 13, item 3).

Every place that parses a client's JSON goes through `runs.core.validation.loads_strict`: the
gateway's run and thread PATCH bodies, the playground's metadata values, the run socket's
messages. Query-string integers go through `parse_query_int`.
"""

from __future__ import annotations

import logging

import pytest
from django.test import Client

from runs.models import Run
from tests.sockets import Socket

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("empty_channel_layer"),
]

DEEP = b"[" * 200_000


def _errors_logged(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.fixture
def gateway(acme_key, acme_token, upstream):
    _token, plaintext = acme_token
    client = Client(raise_request_exception=False)

    def call(method: str, path: str, body: bytes, token: str = plaintext):
        return client.generic(
            method, path, body, content_type="application/json", headers={"X-API-Key": token}
        )

    return call


def _run_body(inner: str) -> bytes:
    return ('{"agent": "code-assistant", "stream": false, ' + inner + "}").encode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_run_body('"prompt": "hi", "metadata": {"a": NaN}'), "metadata.a"),
        (_run_body('"prompt": "hi", "metadata": {"a": Infinity}'), "metadata.a"),
        (_run_body('"prompt": "hi", "metadata": {"a": [1, -Infinity]}'), "metadata.a[1]"),
        (_run_body('"prompt": "hi", "metadata": {"a": 1e999}'), "metadata.a"),
        (_run_body('"prompt": "hi", "config": {"temperature": NaN}'), "config.temperature"),
        (_run_body('"prompt": "hi", "extra": -1e999'), "extra"),
        (_run_body('"prompt": "\\ud800"'), "prompt"),
        (_run_body('"prompt": "hi", "threadId": "thr_\\udfff"'), "threadId"),
        (_run_body('"prompt": "hi", "metadata": {"k": "\\ud800x"}'), "metadata.k"),
        (_run_body('"prompt": "hi", "metadata": {"\\ud800": 1}'), "metadata"),
        (b'{"agent": "\\ud800", "prompt": "hi", "stream": false}', "agent"),
        (_run_body('"messages": [{"role": "user", "content": "\\udc00"}]'), "messages[0].content"),
        (_run_body('"prompt": "hi", "metadata": {"n": ' + "9" * 5000 + "}"), "body"),
        (DEEP, "body"),
        (b'{"metadata":' + b'{"a":' * 100 + b"1" + b"}" * 101, "metadata"),
    ],
)
def test_a_hostile_run_body_is_a_400_naming_the_field(gateway, caplog, body, field):
    response = gateway("POST", "/v1/run", body)
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert error["field"] == field
    assert _errors_logged(caplog) == []
    assert Run.objects.count() == 0


def test_the_legacy_run_path_checks_the_same(gateway):
    response = gateway("POST", "/v1/agents/code-assistant/run", b'{"prompt": "\\ud800"}')
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "prompt"


def test_deep_nesting_from_a_stranger_is_a_401(gateway, caplog):
    response = gateway("POST", "/v1/run", DEEP, token="rtd_unknown")
    assert response.status_code == 401
    assert _errors_logged(caplog) == []


def test_a_valid_surrogate_pair_is_fine(gateway):
    response = gateway("POST", "/v1/run", _run_body('"prompt": "smile \\ud83d\\ude00"'))
    assert response.status_code == 200, response.content[:300]


@pytest.mark.parametrize(
    "body",
    [b'{"title": NaN}', b'{"title": "\\ud800"}', DEEP, b'{"archived": 1e999}'],
)
def test_a_hostile_thread_patch_is_a_400_and_is_not_sent(gateway, caplog, body):
    response = gateway("PATCH", "/v1/threads/thr_whatever", body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert _errors_logged(caplog) == []


# --- The playground form -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "[" * 50_000])
def test_a_hostile_metadata_value_is_a_form_error(client, bob, acme_key, caplog, value):
    client.force_login(bob)
    response = client.post(
        "/playground/run",
        {"agent": "code-assistant", "prompt": "hi", "meta_key": "k", "meta_value": value},
    )
    assert response.status_code == 400
    assert "Metadata" in response.content.decode()
    assert _errors_logged(caplog) == []
    assert Run.objects.count() == 0


def test_plain_text_metadata_is_still_sent_as_text(client, bob, acme_key, upstream):
    client.force_login(bob)
    response = client.post(
        "/playground/run",
        {"agent": "code-assistant", "prompt": "hi", "meta_key": "k", "meta_value": "[not json"},
    )
    assert response.status_code == 302
    assert Run.objects.get().metadata == {"k": "[not json"}


@pytest.mark.parametrize("value", ["NaN", "1e999", "[" * 50_000])
async def test_the_run_socket_answers_invalid_for_hostile_metadata(application, bob, value):
    form = {"agent": "code-assistant", "prompt": "hi", "meta_key": "k", "meta_value": value}
    async with Socket(application, "/ws/playground/", bob) as socket:
        await socket.send({"action": "start", "form": form})
        invalid = await socket.until("invalid")
    assert "metadata" in invalid["errors"]
    assert await Run.objects.acount() == 0


async def test_the_run_socket_refuses_a_lone_surrogate_in_a_message(application, bob):
    async with Socket(application, "/ws/playground/", bob) as socket:
        await socket.communicator.send_to(
            text_data='{"action": "start", "form": {"agent": "a", "prompt": "\\ud800"}}'
        )
        error = await socket.until("error")
    assert error["code"] == "bad_message"
    assert await Run.objects.acount() == 0


# --- Query strings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["maxTurns=%C2%B2", "maxTurns=" + "9" * 5000, "maxTokens=%D9%A3", "maxTurns=-1", "maxTurns=0"],
)
def test_the_estimate_refuses_a_bad_number(client, bob, caplog, query):
    client.force_login(bob)
    response = client.get("/reports/estimate?agent=code-assistant&" + query)
    assert response.status_code == 400
    assert "must be a whole number" in response.content.decode()
    assert _errors_logged(caplog) == []


def test_the_estimate_takes_a_good_number(client, bob):
    client.force_login(bob)
    response = client.get("/reports/estimate?agent=code-assistant&maxTurns=4&maxTokens=")
    assert response.status_code == 200


@pytest.mark.parametrize("after", ["9" * 25, "9" * 5000, "%C2%B2", "-5"])
def test_the_raw_frames_page_takes_any_after(client, alice, gateway, caplog, after):
    gateway("POST", "/v1/run", _run_body('"prompt": "hi"'))
    run = Run.objects.get()
    client.force_login(alice)
    response = client.get(f"/runs/{run.pk}/?view=raw&after={after}")
    assert response.status_code == 200
    assert _errors_logged(caplog) == []
