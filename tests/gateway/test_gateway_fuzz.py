"""Random bodies and headers against the gateway: never a 5xx, never a run left running."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runs.gateway.views import settle
from runs.models import Run
from tests import strategies

pytestmark = pytest.mark.django_db(transaction=True)

scalars = strategies.scalars(2**40)
json_values = strategies.json_values(scalars)
agents = st.sampled_from(["support-chat", "code-assistant", "deep-thinker", "no-such"]) | scalars
messages = st.lists(
    st.fixed_dictionaries(
        {}, optional={"role": st.sampled_from(["user", "assistant"]) | scalars, "content": scalars}
    ),
    max_size=3,
)
configs = st.fixed_dictionaries(
    {},
    optional={
        "maxTokens": st.integers(-5, 200_000) | scalars,
        "maxTurns": st.integers(-5, 2000) | scalars,
        "temperature": st.floats(-1, 3) | scalars,
    },
)
# No "simulate" key: faults such as hangs are tested on purpose elsewhere, not at random.
metadata = st.dictionaries(st.text(max_size=8).filter(lambda k: k != "simulate"), json_values)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "agent": agents,
        "prompt": st.text(max_size=200) | scalars,
        "messages": messages | json_values,
        "threadId": st.text(max_size=40) | scalars,
        "stream": st.booleans() | scalars,
        "config": configs | json_values,
        "metadata": metadata | json_values,
    },
)
raw_bodies = st.binary(max_size=300) | bodies.map(lambda body: json.dumps(body).encode())
content_types = st.sampled_from(
    ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
)
paths = st.sampled_from(["/v1/run", "/v1/agents/support-chat/run", "/v1/agents/%00/run"])


async def _one(raw: bytes, content_type: str, path: str, token: str) -> None:
    client = AsyncClient()
    response = await client.post(path, raw, content_type=content_type, headers={"X-API-Key": token})
    if response.streaming:
        b"".join([chunk async for chunk in response.streaming_content])
    await settle()
    assert response.status_code < 500, (response.status_code, raw[:200])
    if response.status_code >= 400 and not response.streaming:
        assert set(response.json()) == {"error"}


@pytest.mark.usefixtures("acme_key")
def test_random_requests_never_break_the_gateway(upstream, acme_token):
    _token, plaintext = acme_token

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(raw=raw_bodies, content_type=content_types, path=paths)
    def case(raw, content_type, path):
        async_to_sync(_one)(raw, content_type, path, plaintext)

    case()
    assert not Run.objects.filter(status="running").exists()


header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@pytest.mark.usefixtures("upstream", "acme_key", "acme_token")
def test_random_credentials_are_401s():
    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(api_key=header_text, authorization=header_text, path=paths)
    def case(api_key, authorization, path):
        async def one():
            response = await AsyncClient().post(
                path,
                json.dumps({"agent": "support-chat", "prompt": "hi", "stream": False}),
                content_type="application/json",
                headers={"X-API-Key": api_key, "Authorization": authorization},
            )
            assert response.status_code == 401, response.content
            assert response.json()["error"]["code"] in ("unauthorized", "invalid_token")

        async_to_sync(one)()

    case()
    assert not Run.objects.exists()
