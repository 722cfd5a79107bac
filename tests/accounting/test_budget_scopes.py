"""Budgets per member and per gateway token, beside the team's and the agents': counted from
their own runs only, enforced on the gateway, the playground and experiments with the one
budget error, alerting when soft, and chosen only among the team's own members and tokens."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from runs.core.validation import validate_run
from runs.gateway.views import settle
from runs.models import AuditEvent, Budget, GatewayToken, Run
from runs.pipeline.budgets import BudgetExceeded, budget_statuses, enforce_budget
from runs.pipeline.start import launch
from tests.experiments.helpers import post as post_experiment
from tests.experiments.helpers import wait_until_ended
from tests.helpers import login
from tests.reporting import finished_run, set_price

USAGE = {"inputTokens": 1_000_000, "outputTokens": 0}  # $3 at the default test price
BODY = {"agent": "support-chat", "prompt": "My invoice is wrong", "stream": False}
# Expensive enough that one simulated run (about 190 input tokens) uses a $1 budget up.
STEEP = {"input_per_million": "100000", "output_per_million": "100000"}


def budget(team, limit, **scope) -> Budget:
    return Budget.objects.create(team=team, monthly_limit=Decimal(limit), **scope)


# --- What each budget counts ----------------------------------------------------------------


@pytest.mark.django_db
def test_a_member_budget_counts_and_stops_only_that_members_runs(acme, alice, bob):
    set_price(acme)
    budget(acme, "5.00", user=bob, hard_stop=True)
    finished_run(acme, usage=USAGE, user=bob, source="playground")
    finished_run(acme, usage=USAGE, user=alice, source="playground")
    enforce_budget(acme, "code-assistant", user_id=bob.pk)  # $3 of $5: alice's $3 not counted
    finished_run(acme, usage=USAGE, user=bob, source="playground")
    with pytest.raises(BudgetExceeded) as refused:
        enforce_budget(acme, "code-assistant", user_id=bob.pk)
    assert refused.value.code == "budget_exceeded"
    assert "monthly budget for member bob is used up" in refused.value.message
    assert "$6.00 of $5.00" in refused.value.message
    enforce_budget(acme, "code-assistant", user_id=alice.pk)
    enforce_budget(acme, "code-assistant")  # a gateway run has no member


@pytest.mark.django_db
def test_a_token_budget_counts_and_stops_only_that_tokens_runs(acme, alice):
    set_price(acme)
    ci, _ = GatewayToken.issue(acme, "ci", created_by=alice)
    nightly, _ = GatewayToken.issue(acme, "nightly", created_by=alice)
    budget(acme, "2.00", token=ci, hard_stop=True)
    finished_run(acme, usage=USAGE, token=nightly)
    enforce_budget(acme, "code-assistant", token_id=ci.pk)
    finished_run(acme, usage=USAGE, token=ci)
    with pytest.raises(BudgetExceeded, match="monthly budget for token ci"):
        enforce_budget(acme, "code-assistant", token_id=ci.pk)
    enforce_budget(acme, "code-assistant", token_id=nightly.pk)


@pytest.mark.django_db
def test_statuses_list_the_team_then_agents_members_and_tokens(acme, alice, bob):
    ci, _ = GatewayToken.issue(acme, "ci", created_by=alice)
    budget(acme, "1.00", token=ci)
    budget(acme, "1.00", user=bob)
    budget(acme, "1.00", agent="support-chat")
    budget(acme, "1.00")
    names = [status.name for status in budget_statuses(acme)]
    assert names == [
        "the team's monthly budget",
        "the monthly budget for agent support-chat",
        "the monthly budget for member bob",
        f"the monthly budget for token ci ({ci.prefix}…)",
    ]
    governing = budget_statuses(acme, agent="code-assistant", user_id=bob.pk)
    assert [status.budget.user_id for status in governing] == [None, bob.pk]


@pytest.mark.django_db
def test_a_soft_member_budget_alerts_once_without_refusing(acme, bob):
    set_price(acme)
    budget(acme, "1.00", user=bob, hard_stop=False)
    finished_run(acme, usage=USAGE, user=bob, source="playground")
    enforce_budget(acme, "code-assistant", user_id=bob.pk)
    enforce_budget(acme, "code-assistant", user_id=bob.pk)
    events = AuditEvent.objects.filter(team=acme, action="budget_exceeded")
    assert events.count() == 1
    assert "member bob" in events.get().target


@pytest.mark.django_db
def test_a_soft_token_budget_shows_in_the_banner(client, alice, acme):
    set_price(acme)
    ci, _ = GatewayToken.issue(acme, "ci", created_by=alice)
    budget(acme, "5.00", token=ci, warn_percent=50)
    finished_run(acme, usage=USAGE, token=ci)
    response = login(client, alice).get("/reports/budgets")
    assert response.status_code == 200
    assert "Budget warning:</strong> The monthly budget for token ci" in response.text
    assert AuditEvent.objects.filter(team=acme, action="budget_warning").count() == 1


# --- On every path, the same error (the real simulator) -------------------------------------


def _post(async_client, token, body):
    return async_client.post(
        "/v1/run", json.dumps(body).encode(), content_type="application/json",
        headers={"X-API-Key": token},
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
async def test_a_token_budget_stops_the_gateways_next_run_with_that_token(
    async_client, upstream, acme, acme_key, acme_token, alice
):
    token, plaintext = acme_token
    _other, other_plaintext = await sync_to_async(GatewayToken.issue)(acme, "other")
    await sync_to_async(set_price)(acme, **STEEP)
    await Budget.objects.acreate(
        team=acme, token=token, monthly_limit=Decimal("1.00"), hard_stop=True
    )
    assert (await _post(async_client, plaintext, BODY)).status_code == 200
    await settle()
    refused = await _post(async_client, plaintext, BODY)
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert f"monthly budget for token ci ({token.prefix}…) is used up" in error["message"]
    streamed = await _post(async_client, plaintext, {**BODY, "stream": True})
    assert streamed.status_code == 402
    # Another token of the team is not governed by it.
    assert (await _post(async_client, other_plaintext, BODY)).status_code == 200
    await settle()
    assert await Run.objects.acount() == 2


@pytest.mark.django_db(transaction=True)
async def test_a_member_budget_stops_the_playgrounds_next_run_by_that_member(
    upstream, acme, acme_key, alice, bob
):
    await sync_to_async(set_price)(acme, **STEEP)
    await Budget.objects.acreate(team=acme, user=bob, monthly_limit=Decimal("1.00"), hard_stop=True)
    request = validate_run(BODY, json.dumps(BODY).encode())
    started = await launch(acme, request, source="playground", user=bob)
    assert started.run.status == "completed" and started.run.cost > 1
    with pytest.raises(BudgetExceeded) as refused:
        await launch(acme, request, source="playground", user=bob)
    assert refused.value.code == "budget_exceeded"
    assert "monthly budget for member bob is used up" in refused.value.message
    others = await launch(acme, request, source="playground", user=alice)
    assert others.run.status == "completed"
    assert await Run.objects.acount() == 2


@pytest.mark.django_db(transaction=True)
async def test_a_member_budget_refuses_the_playground_page_with_the_budget_error(
    async_client, upstream, acme, acme_key, bob
):
    await sync_to_async(set_price)(acme, **STEEP)
    await Budget.objects.acreate(team=acme, user=bob, monthly_limit=Decimal("1.00"), hard_stop=True)
    request = validate_run(BODY, json.dumps(BODY).encode())
    await launch(acme, request, source="playground", user=bob)
    await async_client.aforce_login(bob)
    response = await async_client.post("/playground/run", {"agent": "support-chat", "prompt": "hi"})
    assert response.status_code == 402
    assert "monthly budget for member bob is used up" in response.content.decode()
    assert await Run.objects.acount() == 1


@pytest.mark.usefixtures("fast_passwords")
@pytest.mark.django_db(transaction=True)
def test_a_token_budget_stops_an_experiment_started_with_that_token(
    client, upstream, acme, acme_key, acme_token, settings
):
    settings.RTDASH_EXPERIMENT_CONCURRENCY = 1
    token, plaintext = acme_token
    set_price(acme, input_per_million=1_000_000)
    budget(acme, "1.00", token=token, hard_stop=True)
    body = {"source": {"prompts": ["one", "two"]}, "variants": [{"agent": "support-chat"}]}
    response = post_experiment(client, body, HTTP_X_API_KEY=plaintext)
    assert response.status_code == 201, response.content
    experiment = wait_until_ended(response.json()["data"]["id"])
    assert experiment.status == "failed"
    assert f"monthly budget for token ci ({token.prefix}…) is used up" in experiment.error_message
    assert Run.objects.filter(source="experiment").count() == 1


# --- The budgets page: scopes and tenancy ---------------------------------------------------


@pytest.mark.django_db
def test_an_owner_sets_a_member_and_a_token_budget(client, alice, bob, acme, acme_token):
    token, _ = acme_token
    login(client, alice)
    for scope in ({"user": bob.pk}, {"token": token.pk}):
        response = client.post(
            "/reports/budgets/set", {**scope, "monthly_limit": "7.50", "warn_percent": "80"}
        )
        assert response.status_code == 302, response.content
    assert Budget.objects.get(team=acme, user=bob).monthly_limit == Decimal("7.50")
    assert Budget.objects.get(team=acme, token=token).agent == ""
    page = client.get("/reports/budgets").text
    assert "Member bob" in page and f"Token ci <code>{token.prefix}…</code>" in page
    targets = AuditEvent.objects.filter(action="budget_set").values_list("target", flat=True)
    assert any(target.startswith("member bob:") for target in targets)
    # Setting it again replaces it.
    client.post(
        "/reports/budgets/set", {"user": bob.pk, "monthly_limit": "9", "warn_percent": "80"}
    )
    assert Budget.objects.get(team=acme, user=bob).monthly_limit == Decimal("9")


@pytest.mark.django_db
def test_another_teams_member_or_token_cannot_be_chosen(client, alice, acme, charlie, globex_token):
    login(client, alice)
    token, _ = globex_token
    for scope in ({"user": charlie.pk}, {"token": token.pk}, {"user": "x"}):
        response = client.post(
            "/reports/budgets/set", {**scope, "monthly_limit": "5", "warn_percent": "80"}
        )
        assert response.status_code == 400
        assert "Select a valid choice" in response.text
    assert not Budget.objects.exists()
    page = client.get("/reports/budgets").text
    assert "charlie" not in page and token.prefix not in page


@pytest.mark.django_db
def test_a_budget_has_one_scope(client, alice, bob, acme):
    login(client, alice)
    response = client.post(
        "/reports/budgets/set",
        {"agent": "support-chat", "user": bob.pk, "monthly_limit": "5", "warn_percent": "80"},
    )
    assert response.status_code == 400
    assert "Choose one of agent, member or token" in response.text
    assert not Budget.objects.exists()


@pytest.mark.django_db
def test_the_estimate_shows_the_members_own_budget(client, alice, bob, acme):
    set_price(acme)
    budget(acme, "4.00", user=bob)
    budget(acme, "100.00", user=alice)
    finished_run(acme, usage=USAGE, user=bob, source="playground")
    response = login(client, bob).get("/reports/estimate?agent=code-assistant")
    assert response.status_code == 200
    assert "$1.00" in response.text  # what is left of bob's $4 after $3


@pytest.mark.django_db
def test_the_banner_says_whose_runs_a_used_up_budget_refuses(client, alice, bob, acme):
    set_price(acme)
    budget(acme, "1.00", user=bob, hard_stop=True)
    finished_run(acme, usage=USAGE, user=bob, source="playground")
    page = login(client, alice).get("/reports/budgets").text
    assert "The monthly budget for member bob is used up" in page
    assert "New runs by this member are refused." in page
