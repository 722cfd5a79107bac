"""Every /v1/ endpoint refuses a caller without a token and a method it does not serve, with
the RunTools error envelope and without a word to the upstream (which nothing answers here:
had the request gone on, the answer would be an upstream error, not these)."""

from __future__ import annotations

import pytest

from runs.models import Run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("acme_key")]


@pytest.fixture(autouse=True)
def _unreachable_upstream(settings):
    settings.RUNTOOLS_API_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing answers


# (path, a method it serves, a method it does not)
ENDPOINTS = [
    ("/v1/run", "POST", "DELETE"),
    ("/v1/run?limit=5", "GET", "PUT"),
    ("/v1/run/run_1", "GET", "POST"),
    ("/v1/run/threads?agent=support-chat", "GET", "POST"),
    ("/v1/run/threads/thr_1?agent=support-chat", "GET", "PATCH"),
    ("/v1/agents", "GET", "POST"),
    ("/v1/agents/support-chat", "GET", "DELETE"),
    ("/v1/agents/support-chat/run", "POST", "GET"),
    ("/v1/threads", "GET", "POST"),
    ("/v1/threads/thr_1", "GET", "POST"),
    ("/v1/threads/thr_1/events", "GET", "DELETE"),
]
IDS = [path.partition("?")[0] for path, _, _ in ENDPOINTS]


def assert_envelope(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]


@pytest.mark.parametrize(("path", "method", "_wrong"), ENDPOINTS, ids=IDS)
def test_it_refuses_a_caller_without_a_token(client, path, method, _wrong):
    response = client.generic(method, path, b"{}", content_type="application/json")
    assert_envelope(response, 401, "unauthorized")
    assert not Run.objects.exists()


@pytest.mark.parametrize(("path", "_method", "wrong"), ENDPOINTS, ids=IDS)
def test_it_rejects_the_wrong_method(client, acme_token, path, _method, wrong):
    response = client.generic(wrong, path, b"{}", content_type="application/json",
                              headers={"X-API-Key": acme_token[1]})  # fmt: skip
    assert_envelope(response, 405, "method_not_allowed")
    assert not Run.objects.exists()
