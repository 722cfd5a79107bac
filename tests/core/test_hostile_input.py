"""Hostile input is a 4xx with a reason, never a 500 or a traceback (issue 13, item 3).

Every place that parses a client's JSON goes through `runs.core.validation.loads_strict`: the
gateway's run and thread PATCH bodies, the playground's metadata values, the run socket's
messages. Query-string integers go through `parse_query_int`.
"""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client

from runs.models import Run
from tests.experiments.helpers import wait_until_ended
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


# --- Days at the calendar's ends ------------------------------------------------------------

EDGE_DAYS = ["9999-12-31", "0001-01-01", "9001-01-01", "1899-12-31"]


@pytest.mark.parametrize("day", EDGE_DAYS)
@pytest.mark.parametrize(
    "path",
    [
        "/runs/?since={day}",
        "/runs/?until={day}",
        "/runs/?q=x&until={day}",
        "/runs/export.csv?until={day}",
        "/settings/audit/?until={day}",
        "/settings/audit/?since={day}",
        "/reports?since={day}&until={day}",
        "/reports?period=custom&since={day}",
    ],
)
def test_a_day_at_the_calendar_s_ends_is_a_form_error_not_a_500(client, alice, caplog, path, day):
    client.force_login(alice)
    response = client.get(path.format(day=day))
    # A page shows the error beside its filters (the run list still lists runs, unfiltered
    # by that day; the audit log and the reports answer 400); an export leaves the day out.
    assert response.status_code in (200, 400), (path, response.status_code)
    if not response.streaming:
        text = response.content.decode()
        assert "1900-01-01" in text or "9000-12-31" in text  # which days are taken
    assert _errors_logged(caplog) == []


@pytest.mark.parametrize("day", EDGE_DAYS)
def test_the_usage_api_refuses_a_day_at_the_calendar_s_ends(client, acme_token, caplog, day):
    for query in (f"since={day}", f"group_by=thread&since={day}", f"since=2026-01-01&until={day}"):
        response = client.get(f"/api/usage?{query}", headers={"X-API-Key": acme_token[1]})
        assert response.status_code == 400, (query, response.content[:200])
        assert response.json()["error"]["code"] == "bad_request"
    assert _errors_logged(caplog) == []


@pytest.mark.parametrize("path", ["/runs/", "/runs/?q=x", "/threads/?q=x"])
@pytest.mark.parametrize(
    "before",
    [
        "-62135596800000000.1",
        "253402300799999999.1",
        "9" * 5000 + ".1",
        "1." + "9" * 30,
        "1700000000000000.thr%00x",
    ],
)
def test_a_cursor_at_the_calendar_s_ends_starts_from_the_newest(
    client, alice, acme, caplog, path, before
):
    # West of UTC, the first instant's local day would be before year 1.
    acme.timezone = "America/New_York"
    acme.save()
    client.force_login(alice)
    joiner = "&" if "?" in path else "?"
    response = client.get(f"{path}{joiner}before={before}")
    assert response.status_code == 200
    assert _errors_logged(caplog) == []


# --- The experiments API --------------------------------------------------------------------


def _experiment(client, token: str, body: bytes):
    return client.post(
        "/api/experiments", body, content_type="application/json", headers={"X-API-Key": token}
    )


@pytest.mark.parametrize("run_id", [10**20, 2**63, 0, -1, 1.5, True])
def test_an_experiment_on_a_run_id_that_is_no_run_id_is_a_400(
    client, acme_key, acme_token, caplog, run_id
):
    body = {"source": {"runs": [run_id]}, "variants": [{"agent": "support-chat"}]}
    response = _experiment(client, acme_token[1], json.dumps(body).encode())
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "source.runs"
    assert _errors_logged(caplog) == []


def test_an_oversized_experiment_is_a_413_in_the_envelope(client, acme_key, acme_token, caplog):
    body = json.dumps({"name": "x" * (1024 * 1024 + 10)}).encode()
    response = _experiment(client, acme_token[1], body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert _errors_logged(caplog) == []


@pytest.mark.parametrize(
    "source",
    [
        {"thread": "thr_\u0000x"},
        {"prompts": ["hi\u0000there"]},
        {"prompts": [{"prompt": "\u0000"}]},
    ],
)
def test_a_nul_in_an_experiment_is_kept_as_rtdash_keeps_text(
    client, acme_key, acme_token, upstream, caplog, source
):
    body = {"name": "a\u0000b", "source": source, "variants": [{"agent": "support-chat"}]}
    response = _experiment(client, acme_token[1], json.dumps(body).encode())
    # A thread rtdash never saw is a 404; prompts are an experiment (its name mended).
    assert response.status_code in (201, 404), response.content[:300]
    if response.status_code == 201:
        # Its replay runs in the background: let it end before the database is emptied.
        experiment = wait_until_ended(response.json()["data"]["id"])
        assert experiment.name == "a\ufffdb"
    assert _errors_logged(caplog) == []


# --- Thread ids that name no thread ----------------------------------------------------------


@pytest.mark.parametrize("thread_id", ["%2E%2E", "%2E", "thr%00x"])
@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("post", "rename/"), ("post", "archive/"), ("post", "delete/")],
)
def test_a_thread_id_that_names_no_thread_is_a_404_and_goes_nowhere(
    client, alice, acme_key, settings, caplog, thread_id, method, suffix
):
    settings.RUNTOOLS_API_URL = "http://127.0.0.1:9/v1"  # nothing answers: had it gone, a 502
    client.force_login(alice)
    response = getattr(client, method)(f"/threads/{thread_id}/{suffix}", {"title": "t"})
    assert response.status_code == 404
    assert _errors_logged(caplog) == []


def test_a_nul_in_a_thread_search_or_the_playground_s_thread_is_no_500(client, alice, caplog):
    client.force_login(alice)
    assert client.get("/threads/?q=a%00b").status_code == 200
    assert client.get("/reports/estimate?agent=a%00b&maxTurns=2").status_code == 200
    response = client.get("/playground?thread=thr%00x")
    assert response.status_code == 200
    assert "not one of this team" in response.content.decode()
    assert _errors_logged(caplog) == []
