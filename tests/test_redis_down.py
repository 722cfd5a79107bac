"""With the cache's Redis gone, the gateway and logins keep working (throttles fail open)."""

from __future__ import annotations

import json

import pytest

from runs.gateway import settle
from runs.models import GatewayToken, Run
from tests.conftest import PASSWORD

DEAD_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:9/0",  # the discard port: nothing answers
    }
}


@pytest.fixture
def dead_cache(settings):
    # Changing CACHES through the settings fixture makes Django rebuild its cache handlers.
    settings.CACHES = DEAD_REDIS


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("acme_key")
async def test_the_gateway_serves_and_records_without_its_cache(
    async_client, upstream, acme_token, dead_cache
):
    token, plaintext = acme_token
    await GatewayToken.objects.filter(pk=token.pk).aupdate(requests_per_minute=5)
    response = await async_client.post(
        "/v1/run",
        json.dumps({"agent": "support-chat", "prompt": "hi", "stream": False}),
        content_type="application/json",
        headers={"X-API-Key": plaintext},
    )
    await settle()
    assert response.status_code == 200
    assert (await Run.objects.aget()).status == "completed"


@pytest.mark.django_db
def test_logging_in_works_without_the_cache(client, alice, dead_cache):
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/").status_code == 200
