"""The simulator's runs list, run lookup and activity log, against the real server on loopback.

Runs belong to the organisation (every key of one simulator is a member of `org_sim`); the
first key is its admin. A run that answered `registered` or `dispatched` answers `running` to
`metadata.simulate.pendingLookups` lookups (2 by default), then `completed`.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from simulator.testing import SimulatorServer

ADMIN = "rt_test_admin"
MEMBER = "rt_test_member"
SUPPORT_PROMPT = "My invoice is wrong"
SUPPORT_ANSWER = (
    'Thanks for reaching out about "My invoice is wrong". '
    "I checked the account settings and everything looks in order."
)
# 180 system + (ceil(19 / 4) = 5) + 4 framing = 189 in; ceil(114 / 4) = 29 out.
SUPPORT_USAGE = {"inputTokens": 189, "outputTokens": 29, "totalTokens": 218}
SUPPORT_AGENT_ID = f"agt_{zlib.crc32(b'support-chat'):08x}"
CODE_PROMPT = "Run the tests and summarize failures."


def user_id(key: str) -> str:
    return f"usr_{zlib.crc32(key.encode()):08x}"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    # A fresh simulator per test: runs and activity are org-wide, and tests count them.
    with SimulatorServer(keys=(ADMIN, MEMBER)) as server:
        yield server


@pytest.fixture
def admin(sim: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, headers={"X-API-Key": ADMIN}, timeout=10) as client:
        yield client


@pytest.fixture
def member(sim: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, headers={"X-API-Key": MEMBER}, timeout=10) as client:
        yield client


def run_json(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/run", json={"stream": False, **body})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def look_up(client: httpx.Client, run_id: str) -> dict[str, Any]:
    response = client.get(f"/run/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def assert_error(response: httpx.Response, status: int, code: str, mentions: str = "") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert mentions in error["message"]


# --- GET /v1/run/{id} ---------------------------------------------------------------------------


def test_it_looks_up_a_completed_run(admin: httpx.Client) -> None:
    made = run_json(admin, agent="support-chat", prompt=SUPPORT_PROMPT)
    detail = look_up(admin, made["runId"])
    completed_at = detail.pop("completedAt")
    created_at = detail.pop("createdAt")
    assert detail == {
        "id": made["runId"],
        "sandboxId": None,
        "agentId": SUPPORT_AGENT_ID,
        "userId": user_id(ADMIN),
        "status": "completed",
        "output": SUPPORT_ANSWER,
        "outputJson": None,
        "tokensUsed": SUPPORT_USAGE,
        "usage": SUPPORT_USAGE,
    }
    assert created_at <= completed_at


def test_a_registered_run_is_running_for_two_lookups_then_completes(admin: httpx.Client) -> None:
    body = {"agent": "support-chat", "prompt": SUPPORT_PROMPT}
    made = run_json(admin, **body, metadata={"simulate": {"runStatus": "registered"}})
    assert made["status"] == "registered"
    assert made["usage"] == {"inputTokens": 189}

    for _ in range(2):
        pending = look_up(admin, made["runId"])
        assert pending["status"] == "running"
        assert pending["output"] is None
        assert pending["tokensUsed"] is None
        assert pending["completedAt"] is None
    done = look_up(admin, made["runId"])
    assert done["status"] == "completed"
    assert done["output"] == SUPPORT_ANSWER
    assert done["tokensUsed"] == done["usage"] == SUPPORT_USAGE
    assert done["completedAt"] is not None
    assert look_up(admin, made["runId"]) == done  # and it stays completed


def test_pending_lookups_sets_how_long_a_dispatched_stream_run_stays_running(
    admin: httpx.Client,
) -> None:
    simulate = {"runStatus": "dispatched", "pendingLookups": 0}
    body = {"agent": "support-chat", "prompt": SUPPORT_PROMPT, "metadata": {"simulate": simulate}}
    response = admin.post("/run", json=body)
    assert response.status_code == 200
    run_id = response.headers["x-run-id"]
    listed = admin.get("/run").json()["data"]
    assert [(r["id"], r["status"]) for r in listed] == [(run_id, "running")]
    assert look_up(admin, run_id)["status"] == "completed"


def test_a_streamed_run_ends_completed_failed_or_cancelled(admin: httpx.Client) -> None:
    def streamed(simulate: dict[str, Any]) -> str:
        body = {"agent": "support-chat", "prompt": "hi", "metadata": {"simulate": simulate}}
        response = admin.post("/run", json=body)
        assert response.status_code == 200
        return response.headers["x-run-id"]

    completed, errored, cut = streamed({}), streamed({"errorAfter": 2}), streamed({"cutAfter": 2})
    assert look_up(admin, completed)["status"] == "completed"
    assert look_up(admin, errored)["status"] == "failed"
    failed = look_up(admin, cut)
    assert failed["status"] == "failed"
    assert failed["output"] is None and failed["tokensUsed"] is None

    # A client that leaves mid-stream cancels the run.
    body = {"agent": "slow-poke", "prompt": "take your time"}
    with admin.stream("POST", "/run", json=body) as response:
        run_id = response.headers["x-run-id"]
        next(response.iter_bytes())
    for _ in range(100):
        status = look_up(admin, run_id)["status"]
        if status != "running":
            break
        time.sleep(0.05)  # a moment for the server to notice the hang-up
    assert status == "cancelled"


def test_an_unknown_run_is_a_404(admin: httpx.Client) -> None:
    assert_error(admin.get("/run/run_nope"), 404, "not_found", "run_nope")


def test_a_member_cannot_look_up_another_members_run_but_an_admin_can(
    admin: httpx.Client, member: httpx.Client
) -> None:
    admins_run = run_json(admin, agent="support-chat", prompt="hi")["runId"]
    members_run = run_json(member, agent="support-chat", prompt="hi")["runId"]
    assert_error(member.get(f"/run/{admins_run}"), 404, "not_found")
    assert look_up(admin, members_run)["userId"] == user_id(MEMBER)


# --- GET /v1/run --------------------------------------------------------------------------------


def test_it_lists_the_keys_runs_newest_first(admin: httpx.Client, member: httpx.Client) -> None:
    first = run_json(admin, agent="support-chat", prompt="one")
    second = run_json(admin, agent="code-assistant", prompt=CODE_PROMPT)
    run_json(member, agent="support-chat", prompt="not mine")
    listed = admin.get("/run").json()["data"]
    assert [r["id"] for r in listed] == [second["runId"], first["runId"]]
    assert set(listed[0]) == {"id", "sandboxId", "agentId", "userId", "status", "createdAt"}
    assert listed[0]["sandboxId"] == second["sandboxId"]
    assert listed[0]["sandboxId"].startswith("sandbox-")
    assert {r["userId"] for r in listed} == {user_id(ADMIN)}


def test_it_filters_by_agent_status_and_limit(admin: httpx.Client) -> None:
    ok_ids = [run_json(admin, agent="support-chat", prompt=f"q{i}")["runId"] for i in range(3)]
    code = run_json(admin, agent="code-assistant", prompt=CODE_PROMPT)["runId"]
    admin.post("/run", json={"agent": "support-chat", "prompt": "x", **_sim(errorAfter=1)})

    def ids(**params: Any) -> list[str]:
        response = admin.get("/run", params=params)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["data"]]

    assert ids(agent="support-chat", status="completed") == ok_ids[::-1]
    assert ids(agent=SUPPORT_AGENT_ID, status="completed", limit=2) == ok_ids[:0:-1]
    assert ids(agent="code-assistant") == [code]
    assert len(ids(status="failed")) == 1
    assert ids(status="cancelled") == []


def _sim(**faults: Any) -> dict[str, Any]:
    return {"metadata": {"simulate": faults}}


@pytest.mark.parametrize(
    ("params", "mentions"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "done"}, "status"),
        ({"all": "yes"}, "all"),
    ],
)
def test_it_rejects_bad_list_parameters(
    admin: httpx.Client, params: dict[str, Any], mentions: str
) -> None:
    assert_error(admin.get("/run", params=params), 400, "bad_request", mentions)


def test_limit_500_is_allowed(admin: httpx.Client) -> None:
    assert admin.get("/run", params={"limit": 500}).status_code == 200


def test_all_shows_every_members_runs_to_an_admin_only(
    admin: httpx.Client, member: httpx.Client
) -> None:
    mine = run_json(admin, agent="support-chat", prompt="a")["runId"]
    theirs = run_json(member, agent="support-chat", prompt="b")["runId"]
    everyone = admin.get("/run", params={"all": "true"}).json()["data"]
    assert [(r["id"], r["userId"]) for r in everyone] == [
        (theirs, user_id(MEMBER)),
        (mine, user_id(ADMIN)),
    ]
    assert_error(member.get("/run", params={"all": "true"}), 403, "forbidden", "admin")
    assert [r["id"] for r in member.get("/run").json()["data"]] == [theirs]


# --- activity -----------------------------------------------------------------------------------


def test_a_runs_activity_tells_its_story(admin: httpx.Client) -> None:
    made = run_json(admin, agent="code-assistant", prompt=CODE_PROMPT)
    body = admin.get("/activity").json()
    assert body["hasMore"] is False and body["nextCursor"] is None
    events = body["data"]["events"]
    assert [(e["eventType"], e["toolSlug"]) for e in events] == [
        ("agent.run.completed", None),
        ("tool.call.completed", "run_tests"),
        ("tool.call.completed", "read_file"),
        ("agent.run.started", None),
    ]
    completed = events[0]
    assert completed["id"] == "act_00000004"
    assert completed["orgId"] == "org_sim"
    assert completed["actorUserId"] == user_id(ADMIN)
    assert completed["actorType"] == "api_key"
    assert completed["resourceType"] == "agent_run"
    assert completed["resourceId"] == completed["agentRunId"] == made["runId"]
    assert completed["threadId"] == made["threadId"]
    assert completed["sandboxId"] == made["sandboxId"]
    assert completed["severity"] == "info" and completed["status"] == "completed"
    assert completed["title"] == "Run completed: Code Assistant"
    assert completed["attributes"]["usage"] == made["usage"]
    assert completed["attributes"]["iterations"] == 3
    assert set(completed) == {
        "id", "orgId", "actorUserId", "actorType", "resourceType", "resourceId", "eventType",
        "severity", "status", "title", "summary", "attributes", "threadId", "agentRunId",
        "sandboxId", "toolSlug", "createdAt",
    }  # fmt: skip


def test_activity_pages_with_a_cursor_and_filters_by_type(admin: httpx.Client) -> None:
    for i in range(3):
        run_json(admin, agent="support-chat", prompt=f"q{i}")  # 2 events each
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        body = admin.get("/activity", params=params).json()
        seen += [e["id"] for e in body["data"]["events"]]
        pages += 1
        if not body["hasMore"]:
            assert body["nextCursor"] is None
            break
        cursor = body["nextCursor"]
    assert pages == 2
    assert seen == [f"act_{n:08d}" for n in range(6, 0, -1)]

    started = admin.get("/activity", params={"event_type": "agent.run.started"}).json()
    started_ids = [e["id"] for e in started["data"]["events"]]
    assert started_ids == ["act_00000005", "act_00000003", "act_00000001"]
    family = admin.get("/activity", params={"event_type": "agent.run"}).json()
    assert len(family["data"]["events"]) == 6


def test_activity_filters_by_time(admin: httpx.Client) -> None:
    run_json(admin, agent="support-chat", prompt="q")
    events = admin.get("/activity").json()["data"]["events"]
    first = min(e["createdAt"] for e in events)
    assert admin.get("/activity", params={"until": first}).json()["data"]["events"] == []
    since = admin.get("/activity", params={"since": first}).json()["data"]["events"]
    assert len(since) == 2
    later = admin.get("/activity", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert later["data"]["events"] == []


@pytest.mark.parametrize(
    ("params", "mentions"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2025-13-01"}, "until"),
        ({"cursor": "bm9wZQ"}, "cursor"),
        ({"limit": 101}, "limit"),
    ],
)
def test_activity_rejects_bad_parameters(
    admin: httpx.Client, params: dict[str, Any], mentions: str
) -> None:
    assert_error(admin.get("/activity", params=params), 400, "bad_request", mentions)


def test_a_member_sees_only_their_own_activity(admin: httpx.Client, member: httpx.Client) -> None:
    run_json(admin, agent="support-chat", prompt="a")
    run_json(member, agent="support-chat", prompt="b")
    mine = member.get("/activity").json()["data"]["events"]
    assert {e["actorUserId"] for e in mine} == {user_id(MEMBER)}
    assert len(mine) == 2
    assert len(admin.get("/activity").json()["data"]["events"]) == 4


def test_thread_activity_is_the_threads_events_only(admin: httpx.Client) -> None:
    first = run_json(admin, agent="support-chat", prompt="a")
    again = run_json(admin, agent="support-chat", prompt="b", threadId=first["threadId"])
    run_json(admin, agent="support-chat", prompt="elsewhere")
    body = admin.get(f"/threads/{first['threadId']}/activity").json()
    runs = [e["agentRunId"] for e in body["data"]["events"]]
    assert runs == [again["runId"]] * 2 + [first["runId"]] * 2
    assert body["hasMore"] is False
    assert_error(admin.get("/threads/thr_nope/activity"), 404, "not_found", "thr_nope")


# --- the same faults as everywhere --------------------------------------------------------------

NEW_ENDPOINTS = ["/run", "/run/run_x", "/activity", "/threads/thr_x/activity"]


@pytest.mark.parametrize("path", NEW_ENDPOINTS)
def test_every_new_endpoint_needs_a_valid_key(sim: SimulatorServer, path: str) -> None:
    for headers in ({}, {"X-API-Key": "rt_test_unknown"}, {"X-API-Key": "sk_nope"}):
        response = httpx.get(sim.url + path, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] in ("unauthorized", "invalid_token")


@pytest.mark.parametrize("path", NEW_ENDPOINTS)
@pytest.mark.parametrize(("status", "code"), [(429, "rate_limited"), (500, "internal_error")])
def test_x_simulate_fails_every_new_endpoint(
    admin: httpx.Client, path: str, status: int, code: str
) -> None:
    header = json.dumps({"status": status, "retryAfter": 7})
    response = admin.get(path, headers={"X-Simulate": header})
    assert_error(response, status, code, "simulate")
    if status == 429:
        assert response.headers["retry-after"] == "7"


def test_x_simulate_hangs_before_the_first_byte(admin: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        admin.get("/activity", headers={"X-Simulate": '{"hangSeconds": 5}'}, timeout=0.3)
    assert admin.get("/activity", headers={"X-Simulate": '{"hangSeconds": 0.1}'}).status_code == 200


def test_a_bad_x_simulate_header_is_a_400(admin: httpx.Client) -> None:
    assert_error(admin.get("/run", headers={"X-Simulate": "{"}), 400, "bad_request", "X-Simulate")
    bad = admin.get("/run", headers={"X-Simulate": '{"status": 418}'})
    assert_error(bad, 400, "bad_request", "status")


def test_armed_faults_fail_the_next_requests_of_that_key_only(
    sim: SimulatorServer, admin: httpx.Client, member: httpx.Client
) -> None:
    armed = httpx.post(
        sim.root + "/_simulate/faults",
        headers={"X-API-Key": ADMIN},
        json={"path": "/v1/run", "method": "GET", "times": 2, "simulate": {"status": 502}},
    )
    assert armed.status_code == 201, armed.text
    assert member.get("/run").status_code == 200  # another key is not affected
    assert admin.post("/run", json={"agent": "support-chat", "prompt": "hi"}).status_code == 200
    assert_error(admin.get("/run"), 502, "provider_error")
    assert_error(admin.get("/run"), 502, "provider_error")
    assert admin.get("/run").status_code == 200


def test_armed_faults_are_validated_and_can_be_cleared(sim: SimulatorServer) -> None:
    headers = {"X-API-Key": ADMIN}
    faults = sim.root + "/_simulate/faults"
    bad = httpx.post(faults, headers=headers, json={"path": "run"})
    assert_error(bad, 400, "bad_request", "path")
    bad = httpx.post(faults, headers=headers, json={"path": "/run", "times": 0})
    assert_error(bad, 400, "bad_request", "times")
    assert httpx.post(faults, json={"path": "/run"}).status_code == 401
    armed = httpx.post(
        faults, headers=headers, json={"path": "/activity", "simulate": {"status": 500}}
    )
    assert armed.status_code == 201
    assert httpx.delete(faults, headers=headers).status_code == 204
    assert httpx.get(sim.url + "/activity", headers=headers).status_code == 200
