"""The gateway behind a real ASGI server: what happens when a client hangs up mid-stream."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TEST_ENCRYPTION_KEY
from tests.live import RtdashServer, wait_for_finished_run

pytestmark = pytest.mark.django_db(transaction=True)

SLOW = {"agent": "slow-poke", "prompt": "Take your time", "metadata": {"simulate": {"dripMs": 40}}}


def _hang_up_after_two_frames(server: RtdashServer, token: str) -> None:
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream("POST", "/v1/run", json=SLOW, headers={"X-API-Key": token}) as response,
    ):
        assert response.status_code == 200
        seen = b""
        for chunk in response.iter_raw():
            seen += chunk
            if seen.count(b"\n\n") >= 2:
                break


@pytest.mark.usefixtures("acme_key")
def test_a_client_hanging_up_does_not_lose_the_run(upstream, acme_token):
    _token, plaintext = acme_token
    with RtdashServer(upstream.url, TEST_ENCRYPTION_KEY) as server:
        _hang_up_after_two_frames(server, plaintext)
        run = wait_for_finished_run()
    assert run.status == "completed"
    assert run.output_tokens is not None
    assert run.frame_count > 10
    assert run.events.count() == run.frame_count


@pytest.mark.usefixtures("acme_key")
def test_it_can_cancel_when_the_client_hangs_up(upstream, acme_token):
    _token, plaintext = acme_token
    with RtdashServer(upstream.url, TEST_ENCRYPTION_KEY, RTDASH_CANCEL_ON_DISCONNECT="1") as server:
        _hang_up_after_two_frames(server, plaintext)
        run = wait_for_finished_run()
    assert run.status == "cancelled"
    assert run.frame_count < 20
