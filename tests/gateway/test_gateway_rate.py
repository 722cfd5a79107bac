"""A token's rate limit: one counter (runs.core.ratelimit), a window from the first request,
and a burst of parallel requests refused past the limit exactly as serial ones."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from django.test import Client

from runs.core.ratelimit import GATEWAY_WINDOW_SECONDS
from runs.models import GatewayToken, Run
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.live import RtdashServer

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 5
BURST = 20


async def _burst(url: str, token: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        calls = [client.get("/v1/agents", headers={"X-API-Key": token}) for _ in range(BURST)]
        return await asyncio.gather(*calls)


@pytest.mark.usefixtures("acme_key")
def test_a_parallel_burst_is_refused_past_the_limit(upstream, acme_token):
    token, plaintext = acme_token
    GatewayToken.objects.filter(pk=token.pk).update(requests_per_minute=LIMIT)
    with RtdashServer(upstream.url, TEST_ENCRYPTION_KEY) as server:
        responses = asyncio.run(_burst(server.url, plaintext))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * LIMIT + [429] * (BURST - LIMIT)
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= GATEWAY_WINDOW_SECONDS


@pytest.mark.usefixtures("upstream", "acme_key")
def test_retry_after_counts_down_from_the_first_request(acme_token):
    token, plaintext = acme_token
    GatewayToken.objects.filter(pk=token.pk).update(requests_per_minute=1)
    client = Client()
    body = json.dumps({"agent": "support-chat", "prompt": "Hi", "stream": False})

    def post():
        return client.post(
            "/v1/run", body, content_type="application/json", headers={"X-API-Key": plaintext}
        )

    assert post().status_code == 200
    refused = post()
    assert refused.status_code == 429
    # The window opened with the first request, moments ago: nearly all of it is left.
    assert GATEWAY_WINDOW_SECONDS - 2 <= int(refused["Retry-After"]) <= GATEWAY_WINDOW_SECONDS
    assert Run.objects.count() == 1
