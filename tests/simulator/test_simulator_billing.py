"""The simulator's billing host: plan, credits, the ledger and usage, on loopback.

Billing is served on the simulator's main port under `/billing/v1` (`SimulatorServer.billing_url`)
and, with `billing_port=True`, as `/v1` on a port of its own, like the upstream's separate host.
The organisation starts with 500 cents of free credits and a 10,000-cent top-up; each completed
run is charged once, `ceil((input * in + (output + reasoning) * out) / 1,000,000)` cents at
least 1, with the prices (cents per million tokens) below, and its ledger entry's
`referenceId` is the run id.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from simulator.testing import SimulatorServer

ADMIN = "rt_test_admin"
MEMBER = "rt_test_member"
PRICES = {
    "gpt-5-mini": (25, 200),
    "claude-sonnet-4-5": (300, 1500),
    "claude-opus-4-1": (1500, 7500),
}
MODEL_OF = {
    "support-chat": "gpt-5-mini",
    "code-assistant": "claude-sonnet-4-5",
    "deep-thinker": "claude-opus-4-1",
}
START = {"balanceCents": 10_500, "totalGrantedCents": 10_500, "totalUsedCents": 0}
# 180 system + (ceil(19 / 4) = 5) + 4 framing = 189 in; ceil(114 / 4) = 29 out.
SUPPORT_USAGE = {"inputTokens": 189, "outputTokens": 29, "totalTokens": 218}


def user_id(key: str) -> str:
    return f"usr_{zlib.crc32(key.encode()):08x}"


def cost(agent: str, usage: dict[str, int]) -> int:
    input_price, output_price = PRICES[MODEL_OF[agent]]
    output = usage["outputTokens"] + usage.get("reasoningTokens", 0)
    return max(1, math.ceil((usage["inputTokens"] * input_price + output * output_price) / 1e6))


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    # A fresh simulator per test: credits belong to the organisation, and tests count them.
    with SimulatorServer(keys=(ADMIN, MEMBER)) as server:
        yield server


def client(base_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=10)


@pytest.fixture
def api(sim: SimulatorServer) -> Iterator[httpx.Client]:
    with client(sim.url, ADMIN) as c:
        yield c


@pytest.fixture
def billing(sim: SimulatorServer) -> Iterator[httpx.Client]:
    with client(sim.billing_url, ADMIN) as c:
        yield c


@pytest.fixture
def member_billing(sim: SimulatorServer) -> Iterator[httpx.Client]:
    with client(sim.billing_url, MEMBER) as c:
        yield c


def data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.json()["meta"]["requestId"].startswith("req_")
    return response.json()["data"]


def run(api: httpx.Client, agent: str, prompt: str, **simulate: Any) -> dict[str, Any]:
    body = {"agent": agent, "prompt": prompt, "stream": False}
    response = api.post("/run", json={**body, "metadata": {"simulate": simulate}})
    return data(response)


def assert_error(response: httpx.Response, status: int, code: str, mentions: str = "") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert mentions in error["message"]


def test_billing_has_its_own_base_url(sim: SimulatorServer) -> None:
    assert sim.billing_url == sim.root + "/billing/v1"
    headers = {"X-API-Key": ADMIN}
    # Not on the API's base: rtdash must use RUNTOOLS_BILLING_URL for billing.
    assert_error(httpx.get(sim.url + "/billing/plan", headers=headers), 404, "not_found")


def test_a_new_organisation_has_its_grants(
    billing: httpx.Client, member_billing: httpx.Client
) -> None:
    assert data(billing.get("/billing/plan")) == {"orgId": "org_sim", "plan": "pro", **START}
    # Credits are the organisation's: every member sees the same.
    assert data(member_billing.get("/billing/credits")) == {**START, "freeCreditsUsed": 0}
    history = data(billing.get("/billing/credits/history"))
    for entry in history:
        assert entry.pop("createdAt").endswith("Z")
    assert history == [
        {
            "id": "led_00000002",
            "orgId": "org_sim",
            "type": "topup",
            "amountCents": 10_000,
            "resource": None,
            "description": "Top-up",
            "referenceId": None,
            "balanceAfterCents": 10_500,
        },
        {
            "id": "led_00000001",
            "orgId": "org_sim",
            "type": "free_credits",
            "amountCents": 500,
            "resource": None,
            "description": "Free credits on sign-up",
            "referenceId": None,
            "balanceAfterCents": 500,
        },
    ]


def test_each_completed_run_is_charged_once_and_tied_to_its_run(
    api: httpx.Client, billing: httpx.Client
) -> None:
    small = run(api, "support-chat", "My invoice is wrong")
    assert small["usage"] == SUPPORT_USAGE
    # 189 * 25 + 29 * 200 = 10,525 micro-cents: rounds up to 1 cent.
    big = run(api, "deep-thinker", "Compare three ways to price the new API tier.", deltas=20_000)
    code = run(api, "code-assistant", "Run the tests and summarize failures.")
    failed = api.post(
        "/run",
        json={"agent": "support-chat", "prompt": "x", "metadata": {"simulate": {"errorAfter": 1}}},
    )
    assert failed.status_code == 200  # a failed run is not charged

    expected = [
        (code["runId"], cost("code-assistant", code["usage"])),
        (big["runId"], cost("deep-thinker", big["usage"])),
        (small["runId"], 1),
    ]
    assert expected[1][1] > 100  # 20,000 deltas of opus output are worth more than a cent
    history = data(billing.get("/billing/credits/history", params={"limit": 3}))
    assert [(e["referenceId"], -e["amountCents"]) for e in history] == expected
    assert {(e["type"], e["resource"]) for e in history} == {("usage", "agent_run")}
    used = sum(amount for _, amount in expected)
    assert [e["balanceAfterCents"] for e in history] == [
        10_500 - used,
        10_500 - used + expected[0][1],
        10_500 - 1,
    ]
    credits = data(billing.get("/billing/credits"))
    assert credits == {
        "balanceCents": 10_500 - used,
        "totalGrantedCents": 10_500,
        "totalUsedCents": used,
        "freeCreditsUsed": min(used, 500),
    }
    assert data(billing.get("/billing/plan"))["balanceCents"] == 10_500 - used


def test_a_registered_run_is_charged_when_it_completes(
    api: httpx.Client, billing: httpx.Client
) -> None:
    made = run(api, "support-chat", "My invoice is wrong", runStatus="registered", pendingLookups=1)
    assert data(billing.get("/billing/credits"))["totalUsedCents"] == 0
    assert data(api.get(f"/run/{made['runId']}"))["status"] == "running"
    assert data(api.get(f"/run/{made['runId']}"))["status"] == "completed"
    assert data(api.get(f"/run/{made['runId']}"))["status"] == "completed"
    assert data(billing.get("/billing/credits"))["totalUsedCents"] == 1
    assert data(billing.get("/billing/credits/history"))[0]["referenceId"] == made["runId"]


def test_my_usage_is_the_sum_of_the_keys_runs(
    sim: SimulatorServer, api: httpx.Client, billing: httpx.Client
) -> None:
    runs = [
        ("support-chat", run(api, "support-chat", "My invoice is wrong")),
        ("deep-thinker", run(api, "deep-thinker", "Should we shard the orders table now?")),
        ("code-assistant", run(api, "code-assistant", "Run the tests and summarize failures.")),
    ]
    with client(sim.url, MEMBER) as member_api:
        run(member_api, "support-chat", "not the admin's")

    for period in ("current", "7d", "30d", "all_time"):
        usage = data(billing.get("/billing/my-usage", params={"period": period}))
        assert usage["period"] == period and usage["scope"] == "user"
        assert len(usage["rows"]) == 1
        row = usage["rows"][0]
        assert row == usage["totals"]
        assert row["userId"] == user_id(ADMIN)
        assert row["runs"] == 3
        sums = {
            name: sum(r["usage"].get(field, 0) for _, r in runs)
            for name, field in [
                ("input", "inputTokens"),
                ("output", "outputTokens"),
                ("reasoning", "reasoningTokens"),
                ("cachedInput", "cachedInputTokens"),
                ("total", "totalTokens"),
            ]
        }
        assert row["tokens"] == sums
        assert row["costCents"] == sum(cost(agent, r["usage"]) for agent, r in runs)
        assert sorted(row["modelUsage"]) == ["claude-opus-4-1", "claude-sonnet-4-5", "gpt-5-mini"]
        sonnet = row["modelUsage"]["claude-sonnet-4-5"]
        code_usage = runs[2][1]["usage"]
        assert sonnet == {
            "input": code_usage["inputTokens"],
            "output": code_usage["outputTokens"],
            "total": code_usage["totalTokens"],
            "runs": 1,
            "costCents": cost("code-assistant", code_usage),
        }
        # One code-assistant run in a sandbox: 3 iterations * 2 s, 2 tool calls; not charged.
        assert row["sandboxRuntime"] == {"seconds": 6, "costCents": 0}
        assert row["toolExecutions"] == {"count": 2, "costCents": 0}
        assert row["storageUsage"] == {"bytes": 0, "costCents": 0}
        assert row["resourceCharges"] == []


def test_my_usage_for_the_whole_org_is_for_admins_only(
    sim: SimulatorServer,
    api: httpx.Client,
    billing: httpx.Client,
    member_billing: httpx.Client,
) -> None:
    run(api, "support-chat", "My invoice is wrong")
    with client(sim.url, MEMBER) as member_api:
        run(member_api, "support-chat", "My invoice is wrong")
        run(member_api, "support-chat", "My invoice is wrong")
    usage = data(billing.get("/billing/my-usage", params={"all": "true", "period": "7d"}))
    assert usage["scope"] == "org"
    by_user = {row["userId"]: row["runs"] for row in usage["rows"]}
    assert by_user == {user_id(ADMIN): 1, user_id(MEMBER): 2}
    assert usage["totals"]["userId"] == "org_sim"
    assert usage["totals"]["runs"] == 3
    assert usage["totals"]["tokens"]["total"] == 3 * SUPPORT_USAGE["totalTokens"]
    assert usage["totals"]["costCents"] == 3

    forbidden = member_billing.get("/billing/my-usage", params={"all": "true"})
    assert_error(forbidden, 403, "forbidden", "admin")
    mine = data(member_billing.get("/billing/my-usage"))
    assert mine["period"] == "current"
    assert [row["runs"] for row in mine["rows"]] == [2]


@pytest.mark.parametrize(
    ("path", "params", "mentions"),
    [
        ("/billing/credits/history", {"limit": 0}, "limit"),
        ("/billing/credits/history", {"limit": 501}, "limit"),
        ("/billing/credits/history", {"limit": "all"}, "limit"),
        ("/billing/my-usage", {"period": "90d"}, "period"),
        ("/billing/my-usage", {"all": "1"}, "all"),
    ],
)
def test_it_rejects_bad_parameters(
    billing: httpx.Client, path: str, params: dict[str, Any], mentions: str
) -> None:
    assert_error(billing.get(path, params=params), 400, "bad_request", mentions)


def test_history_limit_500_is_allowed(billing: httpx.Client) -> None:
    assert len(data(billing.get("/billing/credits/history", params={"limit": 500}))) == 2
    assert len(data(billing.get("/billing/credits/history", params={"limit": 1}))) == 1


BILLING_PATHS = [
    "/billing/plan",
    "/billing/credits",
    "/billing/credits/history",
    "/billing/my-usage",
]


@pytest.mark.parametrize("path", BILLING_PATHS)
def test_every_billing_endpoint_needs_a_valid_key(sim: SimulatorServer, path: str) -> None:
    for headers in ({}, {"X-API-Key": "rt_test_unknown"}, {"Authorization": "Bearer nope"}):
        response = httpx.get(sim.billing_url + path, headers=headers)
        assert response.status_code == 401
    bearer = httpx.get(sim.billing_url + path, headers={"Authorization": f"Bearer {ADMIN}"})
    assert bearer.status_code == 200


@pytest.mark.parametrize("path", BILLING_PATHS)
@pytest.mark.parametrize(
    ("status", "code"), [(401, "unauthorized"), (429, "rate_limited"), (500, "internal_error")]
)
def test_x_simulate_fails_every_billing_endpoint(
    billing: httpx.Client, path: str, status: int, code: str
) -> None:
    response = billing.get(path, headers={"X-Simulate": json.dumps({"status": status})})
    assert_error(response, status, code, "simulate")
    if status == 429:
        assert response.headers["retry-after"] == "2"


def test_armed_faults_and_hangs_work_on_billing(
    sim: SimulatorServer, billing: httpx.Client
) -> None:
    armed = httpx.post(
        sim.root + "/_simulate/faults",
        headers={"X-API-Key": ADMIN},
        json={"path": "/billing/credits", "simulate": {"status": 503}},
    )
    assert armed.status_code == 201
    assert_error(billing.get("/billing/credits"), 503, "unavailable")
    assert data(billing.get("/billing/credits"))["balanceCents"] == 10_500
    with pytest.raises(httpx.ReadTimeout):
        billing.get("/billing/plan", headers={"X-Simulate": '{"hangSeconds": 5}'}, timeout=0.3)


def test_billing_on_a_port_of_its_own() -> None:
    with SimulatorServer(keys=(ADMIN, MEMBER), billing_port=True) as sim:
        assert sim.billing_port is not None and sim.billing_port != sim.port
        assert sim.billing_url == f"http://127.0.0.1:{sim.billing_port}/v1"
        with client(sim.url, ADMIN) as api, client(sim.billing_url, ADMIN) as billing:
            made = run(api, "support-chat", "My invoice is wrong")
            # One simulator, one state: the run made on the API port is billed on the other.
            history = data(billing.get("/billing/credits/history", params={"limit": 1}))
            assert history[0]["referenceId"] == made["runId"]
            assert data(billing.get("/billing/plan"))["balanceCents"] == 10_499
            # The billing host serves billing only, and the API host serves no billing.
            assert_error(billing.get("/agents"), 404, "not_found")
            assert_error(billing.post("/run", json={"agent": "x"}), 404, "not_found")
            assert_error(api.get("/billing/plan"), 404, "not_found")
            assert httpx.get(f"http://127.0.0.1:{sim.billing_port}/healthz").status_code == 200
            assert_error(
                billing.get("/billing/plan", headers={"X-Simulate": '{"status": 502}'}),
                502,
                "provider_error",
            )


def test_credit_totals_stay_exact_when_old_ledger_entries_are_trimmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In-process on purpose: reaching the real cap over HTTP would take 55,000 runs.
    from simulator import records

    monkeypatch.setattr(records, "MAX_LEDGER", 10)
    org = records.OrgRecords()
    for _ in range(30):
        org.credit("usage", -3, "a run", resource="agent_run")
    assert len(org.ledger) <= 11
    assert org.ledger[-1].to_json()["id"] == "led_00000032"
    assert (org.total_granted_cents, org.total_used_cents) == (10_500, 90)
    assert org.balance_cents == 10_500 - 90
