"""Several workers on one database: what one records, every other serves.

Run in CI on PostgreSQL and Redis as well (`.ci/run`); on the SQLite default both workers
share the test database file.
"""

from __future__ import annotations

import time

import httpx
import pytest
from django.test import Client

from runs.models import Run
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.live import RtdashServer
from tests.streams import frames

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_workers(upstream):
    with (
        RtdashServer(upstream.url, TEST_ENCRYPTION_KEY) as a,
        RtdashServer(upstream.url, TEST_ENCRYPTION_KEY) as b,
    ):
        yield a, b


def _finished(run_id: int) -> Run:
    """The run once its record is complete (just after its last byte went out)."""
    deadline = time.monotonic() + 10
    while (run := Run.objects.get(pk=run_id)).status == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    return run


def _session_cookie(user) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    return {"sessionid": client.cookies["sessionid"].value}


@pytest.mark.usefixtures("acme_key")
def test_a_stream_recorded_on_one_worker_is_served_by_the_other(two_workers, acme_token, alice):
    a, b = two_workers
    _token, plaintext = acme_token
    body = {"agent": "code-assistant", "prompt": "Check tests/test_io.py on two workers"}
    with httpx.stream(
        "POST", a.url + "/v1/run", json=body, headers={"X-API-Key": plaintext}, timeout=30
    ) as response:
        raw = response.read()
    assert frames(raw)[-1][0] == "run_completed"

    run_id = int(response.headers["X-Rtdash-Run-Id"])
    page = httpx.get(f"{b.url}/runs/{run_id}/", cookies=_session_cookie(alice), timeout=30)
    assert page.status_code == 200
    assert "Check tests/test_io.py on two workers" in page.text
    run = _finished(run_id)
    assert run.status == "completed"
    assert run.events.count() == len(frames(raw))
