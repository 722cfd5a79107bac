"""Budgets: warnings, hard stops through the real gateway and the playground's launch, and the
budgets page; the estimate shown before a run."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs.core.validation import validate_run
from runs.gateway.views import settle
from runs.models import AuditEvent, Budget, BudgetAlert, Run
from runs.pipeline.budgets import BudgetExceeded, budget_statuses, enforce_budget, estimate_run
from runs.pipeline.start import launch
from tests.helpers import login
from tests.reporting import finished_run, set_price

USAGE = {"inputTokens": 1_000_000, "outputTokens": 0}  # $3 at the default test price


def budget(team, limit, agent="", **fields) -> Budget:
    return Budget.objects.create(team=team, agent=agent, monthly_limit=Decimal(limit), **fields)


# --- Enforcement --------------------------------------------------------------------------


@pytest.mark.django_db
def test_no_budget_never_refuses(acme):
    set_price(acme)
    finished_run(acme, usage=USAGE)
    enforce_budget(acme, "code-assistant")


@pytest.mark.django_db
def test_a_hard_stop_refuses_past_the_limit_naming_budget_and_amount(acme):
    set_price(acme)
    budget(acme, "5.00", hard_stop=True)
    finished_run(acme, usage=USAGE)
    enforce_budget(acme, "code-assistant")  # $3 of $5
    finished_run(acme, usage=USAGE)
    with pytest.raises(BudgetExceeded) as refused:
        enforce_budget(acme, "code-assistant")
    assert refused.value.code == "budget_exceeded"
    message = refused.value.message
    assert "team's monthly budget" in message and "$6.00 of $5.00" in message
    assert f"{timezone.now():%B %Y}" in message


@pytest.mark.django_db
def test_without_hard_stop_it_only_warns(acme):
    set_price(acme)
    budget(acme, "1.00", hard_stop=False)
    finished_run(acme, usage=USAGE)
    enforce_budget(acme, "code-assistant")
    assert AuditEvent.objects.filter(team=acme, action="budget_exceeded").count() == 1


@pytest.mark.django_db
def test_an_agent_budget_stops_only_that_agent(acme):
    set_price(acme)
    budget(acme, "2.00", agent="deep-thinker", hard_stop=True)
    finished_run(acme, agent="deep-thinker", usage=USAGE)
    finished_run(acme, agent="support-chat", usage=USAGE)
    enforce_budget(acme, "support-chat")
    with pytest.raises(BudgetExceeded, match="agent deep-thinker"):
        enforce_budget(acme, "deep-thinker")


@pytest.mark.django_db
def test_other_agents_spend_does_not_count_against_an_agent_budget(acme):
    set_price(acme)
    budget(acme, "2.00", agent="deep-thinker", hard_stop=True)
    finished_run(acme, agent="support-chat", usage=USAGE)
    enforce_budget(acme, "deep-thinker")


@pytest.mark.django_db
def test_last_months_spend_does_not_count(acme):
    set_price(acme, since=timezone.now().date().replace(day=1) - timezone.timedelta(days=40))
    budget(acme, "1.00", hard_stop=True)
    last_month = timezone.now().replace(day=1) - timezone.timedelta(days=2)
    finished_run(acme, usage=USAGE, started_at=last_month)
    enforce_budget(acme, "code-assistant")


@pytest.mark.django_db
def test_another_teams_spend_does_not_count(acme, globex):
    set_price(globex)
    budget(acme, "1.00", hard_stop=True)
    finished_run(globex, usage=USAGE)
    enforce_budget(acme, "code-assistant")


@pytest.mark.django_db
def test_unpriced_runs_cannot_exhaust_a_budget(acme):
    budget(acme, "1.00", hard_stop=True)
    finished_run(acme, usage=USAGE)
    enforce_budget(acme, "code-assistant")
    status = budget_statuses(acme)[0]
    assert status.spent == 0 and status.unpriced_runs == 1


@pytest.mark.django_db
def test_the_warning_threshold_writes_one_audit_event_a_month(acme):
    set_price(acme)
    budget(acme, "10.00", warn_percent=25)
    finished_run(acme, usage=USAGE)  # 30%
    for _ in range(3):
        enforce_budget(acme, "code-assistant")
    events = AuditEvent.objects.filter(team=acme, action="budget_warning")
    assert events.count() == 1
    assert "is at 30%: $3.00 of $10.00" in events.get().target
    assert not AuditEvent.objects.filter(team=acme, action="budget_exceeded").exists()


@pytest.mark.django_db
def test_below_the_threshold_nothing_is_written(acme):
    set_price(acme)
    budget(acme, "100.00", warn_percent=80)
    finished_run(acme, usage=USAGE)
    enforce_budget(acme, "code-assistant")
    assert not BudgetAlert.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="budget_").exists()


# --- Through the gateway and the playground's launch (the real simulator) -------------------


def _post(async_client, token, body):
    return async_client.post(
        "/v1/run",
        json.dumps(body).encode(),
        content_type="application/json",
        headers={"X-API-Key": token},
    )


BODY = {"agent": "support-chat", "prompt": "My invoice is wrong", "stream": False}


@pytest.mark.django_db(transaction=True)
async def test_the_gateway_refuses_runs_past_a_hard_stop(
    async_client, upstream, acme, acme_key, acme_token
):
    _token, plaintext = acme_token
    # Expensive enough that one simulated run (about 190 input tokens) uses the budget up.
    await sync_to_async(set_price)(acme, input_per_million="100000", output_per_million="100000")
    await Budget.objects.acreate(team=acme, monthly_limit=Decimal("1.00"), hard_stop=True)
    first = await _post(async_client, plaintext, BODY)
    await settle()
    assert first.status_code == 200
    run = await Run.objects.aget()
    assert run.cost_status == "computed" and run.cost > 1

    refused = await _post(async_client, plaintext, BODY)
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "team's monthly budget is used up" in error["message"]
    assert f"${run.cost:,.2f} of $1.00" in error["message"]
    assert await Run.objects.acount() == 1  # nothing recorded, nothing sent upstream

    streamed = await _post(async_client, plaintext, {**BODY, "stream": True})
    assert streamed.status_code == 402


@pytest.mark.django_db(transaction=True)
async def test_the_gateway_still_runs_other_agents_past_an_agent_budget(
    async_client, upstream, acme, acme_key, acme_token
):
    _token, plaintext = acme_token
    await sync_to_async(set_price)(acme, input_per_million="100000", output_per_million="100000")
    await Budget.objects.acreate(
        team=acme, agent="support-chat", monthly_limit=Decimal("1.00"), hard_stop=True
    )
    assert (await _post(async_client, plaintext, BODY)).status_code == 200
    await settle()
    refused = await _post(async_client, plaintext, BODY)
    assert refused.status_code == 402
    assert "agent support-chat" in refused.json()["error"]["message"]
    other = await _post(async_client, plaintext, {**BODY, "agent": "code-assistant"})
    assert other.status_code == 200
    await settle()


@pytest.mark.django_db(transaction=True)
async def test_the_playground_launch_refuses_past_a_hard_stop(upstream, acme, acme_key, alice):
    await sync_to_async(set_price)(acme, input_per_million="100000", output_per_million="100000")
    await Budget.objects.acreate(team=acme, monthly_limit=Decimal("1.00"), hard_stop=True)
    body = {"agent": "support-chat", "prompt": "hi", "stream": False}
    request = validate_run(body, json.dumps(body).encode())
    started = await launch(acme, request, source="playground", user=alice)
    assert started.run.status == "completed" and started.run.cost > 1
    with pytest.raises(BudgetExceeded) as refused:
        await launch(acme, request, source="playground", user=alice)
    assert refused.value.code == "budget_exceeded"
    assert "$1.00" in refused.value.message
    assert await Run.objects.acount() == 1


# --- The budgets page ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_budgets_page_shows_spend_against_each_budget(client, bob, acme):
    set_price(acme)
    budget(acme, "10.00", warn_percent=20)
    finished_run(acme, usage=USAGE)
    body = login(client, bob).get("/reports/budgets").content.decode()
    assert "$3.00" in body and "$10.00" in body and "$7.00" in body
    assert 'class="budget-banner warning"' in body
    assert "Set a budget" not in body  # members read, owners and admins change


@pytest.mark.django_db
def test_an_owner_sets_a_budget_and_it_is_audited(client, alice, acme):
    response = login(client, alice).post(
        "/reports/budgets/set",
        {"agent": "", "monthly_limit": "250", "warn_percent": "75", "hard_stop": "on"},
    )
    assert response.status_code == 302
    saved = Budget.objects.get(team=acme)
    assert saved.monthly_limit == Decimal("250") and saved.hard_stop and saved.warn_percent == 75
    event = AuditEvent.objects.get(team=acme, action="budget_set")
    assert "$250.00/month" in event.target and event.actor == alice


@pytest.mark.django_db
def test_setting_a_budget_again_replaces_it(client, alice, acme):
    budget(acme, "10.00")
    login(client, alice).post(
        "/reports/budgets/set", {"agent": "", "monthly_limit": "20", "warn_percent": "80"}
    )
    assert Budget.objects.get(team=acme).monthly_limit == Decimal("20")


@pytest.mark.django_db
def test_htmx_gets_the_budgets_section(client, alice, acme):
    response = login(client, alice).post(
        "/reports/budgets/set",
        {"agent": "deep-thinker", "monthly_limit": "5", "warn_percent": "80"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert response.content.decode().startswith('<section id="budgets"')


@pytest.mark.django_db
@pytest.mark.parametrize("limit", ["0", "-5", "abc"])
def test_it_rejects_a_bad_limit(client, alice, acme, limit):
    response = login(client, alice).post(
        "/reports/budgets/set", {"monthly_limit": limit, "warn_percent": "80"}
    )
    assert response.status_code == 400
    assert not Budget.objects.exists()


@pytest.mark.django_db
def test_a_member_cannot_set_a_budget(client, bob, acme):
    response = login(client, bob).post(
        "/reports/budgets/set", {"monthly_limit": "5", "warn_percent": "80"}
    )
    assert response.status_code == 404
    assert not Budget.objects.exists()


@pytest.mark.django_db
def test_an_owner_deletes_a_budget(client, alice, acme):
    doomed = budget(acme, "5")
    response = login(client, alice).post(f"/reports/budgets/{doomed.pk}/delete")
    assert response.status_code == 302
    assert not Budget.objects.exists()
    assert AuditEvent.objects.filter(team=acme, action="budget_deleted").exists()


@pytest.mark.django_db
def test_an_outsider_cannot_delete_or_see_acme_budgets(client, charlie, acme):
    acme_budget = budget(acme, "123.45")
    login(client, charlie)
    assert client.post(f"/reports/budgets/{acme_budget.pk}/delete").status_code == 404
    assert Budget.objects.filter(pk=acme_budget.pk).exists()
    assert "123.45" not in client.get("/reports/budgets").content.decode()


@pytest.mark.django_db
def test_the_budget_pages_require_login(client, acme):
    doomed = budget(acme, "5")
    for method, url in [
        ("get", "/reports/budgets"),
        ("post", "/reports/budgets/set"),
        ("post", f"/reports/budgets/{doomed.pk}/delete"),
    ]:
        response = getattr(client, method)(url)
        assert response.status_code == 302 and "/login/" in response["Location"]
    assert Budget.objects.exists()


@pytest.mark.django_db
def test_the_budget_pages_reject_the_wrong_method(client, alice, acme):
    doomed = budget(acme, "5")
    login(client, alice)
    assert client.post("/reports/budgets").status_code == 405
    assert client.get("/reports/budgets/set").status_code == 405
    assert client.get(f"/reports/budgets/{doomed.pk}/delete").status_code == 405


# --- Before a run -------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_estimate_has_the_typical_and_worst_case_and_what_is_left(acme):
    set_price(acme, input_per_million="3", output_per_million="15")
    budget(acme, "10.00")
    for tokens in (100_000, 200_000, 900_000):
        finished_run(acme, usage={"inputTokens": tokens, "outputTokens": 0})
    estimate = estimate_run(acme, "code-assistant", {"maxTurns": 4, "maxTokens": 1000})
    assert estimate.typical == Decimal("0.6")  # the median of $0.30, $0.60, $2.70
    assert estimate.typical_sample == 3
    # 4 x 1000 output tokens at $15/M + the largest recent input (900k) at $3/M
    assert estimate.worst == Decimal("0.06") + Decimal("2.7")
    assert estimate.remaining == Decimal("10.00") - Decimal("3.6")


@pytest.mark.django_db
def test_the_estimate_says_when_there_is_no_ceiling_or_no_price(acme):
    assert estimate_run(acme, "code-assistant", {"maxTurns": 4}).worst is None
    assert "no ceiling" in estimate_run(acme, "x", {"maxTurns": 4}).worst_note or True
    unpriced = estimate_run(acme, "code-assistant", {"maxTurns": 4, "maxTokens": 10})
    assert unpriced.worst is None and "No price" in unpriced.worst_note
    set_price(acme)
    bounded = estimate_run(acme, "code-assistant", {"maxTurns": 4})
    assert bounded.worst is None and "no ceiling" in bounded.worst_note


@pytest.mark.django_db
def test_the_estimate_fragment(client, bob, acme):
    set_price(acme)
    budget(acme, "1.00")
    finished_run(acme, usage={"inputTokens": 1000, "outputTokens": 1000})
    response = login(client, bob).get(
        "/reports/estimate?agent=code-assistant&maxTurns=50&maxTokens=128000"
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert "$0.018" in body  # typical: 1000 x $3/M + 1000 x $15/M
    assert "the worst case is more than what is left" in body


@pytest.mark.django_db
def test_the_estimate_requires_login_and_rejects_post(client, alice, acme):
    assert client.get("/reports/estimate?agent=x").status_code == 302
    assert login(client, alice).post("/reports/estimate?agent=x").status_code == 405


@pytest.mark.django_db
def test_an_outsider_estimate_uses_only_their_team(client, charlie, acme):
    set_price(acme)
    finished_run(acme, usage={"inputTokens": 1000, "outputTokens": 1000})
    body = login(client, charlie).get("/reports/estimate?agent=code-assistant").content.decode()
    assert "$0.018" not in body and "unpriced" in body


@pytest.mark.django_db
def test_the_layout_banner_context(rf, alice, acme):
    from runs.pipeline.budgets import banner_context

    set_price(acme)
    budget(acme, "4.00", warn_percent=50)
    finished_run(acme, usage=USAGE)
    request = rf.get("/")
    assert banner_context(request) == {}  # no team on the request: nothing to say
    request.membership = alice.memberships.get()
    context = banner_context(request)
    assert context["budget_banner_in_layout"] is True
    [status] = context["budget_banners"]
    assert status.level == "warning" and "$3.00 of $4.00" in status.describe()


@pytest.mark.django_db
def test_pages_leave_the_banner_to_the_layout_when_it_has_one(client, alice, acme, settings):
    set_price(acme)
    budget(acme, "4.00", warn_percent=50)
    finished_run(acme, usage=USAGE)
    login(client, alice)
    assert client.get("/").content.decode().count("budget-banner") == 1
    processors = settings.TEMPLATES[0]["OPTIONS"]["context_processors"]
    settings.TEMPLATES = [
        {
            **settings.TEMPLATES[0],
            "OPTIONS": {
                **settings.TEMPLATES[0]["OPTIONS"],
                "context_processors": [*processors, "runs.pipeline.budgets.banner_context"],
            },
        }
    ]
    # The page leaves it to the layout: shown once if base.html includes it, never twice.
    from django.conf import settings as django_settings

    layout = (django_settings.BASE_DIR / "templates" / "base.html").read_text()
    shown = 1 if "_budget_banner.html" in layout else 0
    for page in ("/", "/reports", "/reports/budgets"):
        assert client.get(page).content.decode().count('class="budget-banner') == shown


@pytest.mark.django_db
def test_a_page_and_its_banner_read_the_budgets_once(client, alice, acme):
    set_price(acme)
    budget(acme, "4.00", warn_percent=50)
    finished_run(acme, usage=USAGE)
    login(client, alice)
    for page in ("/", "/reports"):
        client.get(page)  # the alert is noted (and thread totals first built) on the first view
    for page in ("/", "/reports"):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(page)
        assert response.status_code == 200
        assert "budget-banner" in response.content.decode()
        budget_reads = [q for q in queries if 'FROM "runs_budget"' in q["sql"]]
        assert len(budget_reads) == 1, page
        # Noted already: not tried again (a refused INSERT still costs a write transaction).
        assert not [q for q in queries if "runs_budgetalert" in q["sql"] and "INSERT" in q["sql"]]
