"""Who may use the gateway, what key goes upstream, and what a team can see."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from runs.gateway.views import settle
from runs.models import AuditEvent, GatewayToken, Run, RunEvent, Thread

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"agent": "support-chat", "prompt": "Hello", "stream": False}


async def post_run(async_client, headers, body=BODY):
    response = await async_client.post(
        "/v1/run", json.dumps(body), content_type="application/json", headers=headers
    )
    await settle()
    return response


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_it_accepts_a_bearer_token(async_client, acme_token):
    _token, plaintext = acme_token
    response = await post_run(async_client, {"Authorization": f"Bearer {plaintext}"})
    assert response.status_code == 200


@pytest.mark.usefixtures("upstream", "acme_key")
@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "unauthorized"),
        ({"X-API-Key": "rtd_not-a-real-token"}, "invalid_token"),
        ({"Authorization": "Basic abc"}, "unauthorized"),
        # The team's RunTools key itself is not an rtdash token.
        ({"X-API-Key": "rt_test_demo"}, "invalid_token"),
    ],
)
async def test_it_rejects_missing_or_wrong_tokens(async_client, headers, code):
    response = await post_run(async_client, headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert "requestId" in response.json()["error"]
    assert await Run.objects.acount() == 0


@pytest.mark.usefixtures("upstream", "acme_key")
@pytest.mark.parametrize(
    "change",
    [
        {"revoked_at": timezone.now()},
        {"expires_at": timezone.now() - timedelta(seconds=1)},
    ],
)
async def test_it_rejects_revoked_and_expired_tokens(async_client, acme_token, change):
    token, plaintext = acme_token
    assert (await post_run(async_client, {"X-API-Key": plaintext})).status_code == 200
    await GatewayToken.objects.filter(pk=token.pk).aupdate(**change)
    response = await post_run(async_client, {"X-API-Key": plaintext})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_it_records_the_token_and_its_last_use(async_client, acme_token):
    token, plaintext = acme_token
    await post_run(async_client, {"X-API-Key": plaintext})
    run = await Run.objects.aget()
    assert run.token_id == token.pk
    await token.arefresh_from_db()
    assert token.last_used_at is not None


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_it_enforces_a_tokens_rate_limit(async_client, acme_token):
    token, plaintext = acme_token
    await GatewayToken.objects.filter(pk=token.pk).aupdate(requests_per_minute=2)
    statuses = [(await post_run(async_client, {"X-API-Key": plaintext})) for _ in range(3)]
    assert [r.status_code for r in statuses[:2]] == [200, 200]
    assert statuses[2].status_code == 429
    assert statuses[2].json()["error"]["code"] == "rate_limited"
    assert 1 <= int(statuses[2]["Retry-After"]) <= 60
    assert await Run.objects.acount() == 2


@pytest.mark.usefixtures("upstream")
async def test_a_team_without_a_key_gets_a_clear_error(async_client, acme_token):
    _token, plaintext = acme_token
    response = await post_run(async_client, {"X-API-Key": plaintext})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_runtools_key"


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_the_callers_token_is_never_forwarded(async_client, acme_token, settings):
    """The simulator only knows RunTools keys: a forwarded rtdash token would be a 401."""
    _token, plaintext = acme_token
    response = await post_run(async_client, {"X-API-Key": plaintext})
    assert response.status_code == 200
    run = await Run.objects.aget()
    assert plaintext not in json.dumps(run.metadata) + run.prompt + run.error_message


# --- Threads and tenancy ----------------------------------------------------------------


def _as_team(async_client, plaintext: str):
    """Call the gateway with one team's token; the record is complete when it returns."""

    async def call(method, path, body=None):
        data = json.dumps(body) if body is not None else ""
        response = await async_client.generic(
            method, path, data, content_type="application/json", headers={"X-API-Key": plaintext}
        )
        await settle()
        return response

    return call


@pytest.fixture
def as_acme(async_client, upstream, acme_key, acme_token):
    return _as_team(async_client, acme_token[1])


@pytest.fixture
def as_globex(async_client, upstream, globex_key, globex_token):
    return _as_team(async_client, globex_token[1])


async def _start_thread(call, agent="support-chat", prompt="Plan the launch"):
    response = await call("POST", "/v1/run", {"agent": agent, "prompt": prompt, "stream": False})
    return response.json()["data"]["threadId"]


async def test_thread_endpoints_pass_through(as_acme):
    thread_id = await _start_thread(as_acme)

    listed = await as_acme("GET", "/v1/run/threads?agent=support-chat")
    assert listed.status_code == 200
    assert thread_id in [t["id"] for t in listed.json()["data"]]

    one = await as_acme("GET", f"/v1/run/threads/{thread_id}?agent=support-chat")
    assert one.json()["data"]["thread"]["id"] == thread_id
    assert one.json()["data"]["events"][0]["type"] == "user_message"

    canonical = await as_acme("GET", "/v1/threads?limit=10")
    assert thread_id in [t["id"] for t in canonical.json()["data"]]
    assert "hasMore" in canonical.json()["meta"]

    detail = await as_acme("GET", f"/v1/threads/{thread_id}")
    assert detail.json()["data"]["thread"]["id"] == thread_id

    events = await as_acme("GET", f"/v1/threads/{thread_id}/events?limit=1")
    assert len(events.json()["data"]) == 1
    assert events.json()["hasMore"] is True

    agents = await as_acme("GET", "/v1/agents")
    assert "code-assistant" in [a["slug"] for a in agents.json()["data"]]
    agent = await as_acme("GET", "/v1/agents/slow-poke")
    assert agent.json()["data"]["slug"] == "slow-poke"


async def test_patch_renames_and_archives_the_thread_record(as_acme):
    thread_id = await _start_thread(as_acme)
    response = await as_acme(
        "PATCH", f"/v1/threads/{thread_id}", {"title": "Launch plan", "archived": True}
    )
    assert response.status_code == 200
    assert response.json()["data"]["title"] == "Launch plan"
    thread = await Thread.objects.aget(upstream_id=thread_id)
    assert (thread.title, thread.archived) == ("Launch plan", True)


@pytest.mark.parametrize("path", ["/v1/threads/{id}", "/v1/run/threads/{id}?agent=support-chat"])
async def test_delete_keeps_usage_and_marks_the_thread(as_acme, path):
    thread_id = await _start_thread(as_acme)
    response = await as_acme("DELETE", path.format(id=thread_id))
    assert response.status_code in (200, 204)
    thread = await Thread.objects.aget(upstream_id=thread_id)
    assert thread.deleted_at is not None
    run = await Run.objects.aget(thread=thread)
    assert run.input_tokens > 0
    # The content goes, the usage stays, and the deletion is audited.
    assert (run.prompt, run.result) == ("", "")
    assert not await RunEvent.objects.filter(run=run).aexists()
    assert await AuditEvent.objects.filter(action="thread_deleted", team__slug="acme").aexists()
    gone = await as_acme("GET", f"/v1/threads/{thread_id}")
    assert gone.status_code == 404


async def test_thread_errors_pass_through(as_acme):
    assert (await as_acme("GET", "/v1/threads/thr_nope")).status_code == 404
    assert (await as_acme("GET", "/v1/run/threads")).status_code == 400
    assert (await as_acme("GET", "/v1/threads?limit=1000")).status_code == 400
    assert (await as_acme("POST", "/v1/threads")).status_code == 405


async def test_one_team_never_sees_anothers_threads(as_acme, as_globex):
    acme_thread = await _start_thread(as_acme)
    globex_thread = await _start_thread(as_globex, prompt="Globex secret plan")

    listed = await as_globex("GET", "/v1/threads")
    ids = [t["id"] for t in listed.json()["data"]]
    assert globex_thread in ids and acme_thread not in ids
    assert (await as_globex("GET", f"/v1/threads/{acme_thread}")).status_code == 404
    assert (await as_globex("DELETE", f"/v1/threads/{acme_thread}")).status_code == 404
    assert await Thread.objects.filter(upstream_id=acme_thread, deleted_at=None).aexists()

    acme_runs = await sync_to_async(list)(Run.objects.filter(team__slug="acme"))
    assert [run.prompt for run in acme_runs] == ["Plan the launch"]


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_strangers_get_401_before_any_validation(async_client):
    response = await async_client.post(
        "/v1/run", b"not json", content_type="application/json", headers={"X-API-Key": "rtd_x"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"
