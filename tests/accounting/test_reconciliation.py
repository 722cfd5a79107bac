"""Reconciliation with RunTools' usage and billing, against a fresh simulator per test (its
runs, usage and ledger start empty, so totals can be asserted exactly)."""

from __future__ import annotations

import html
import io

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command

from runs.accounting.reconcile import reconcile
from runs.gateway.views import settle
from runs.models import Run
from simulator.testing import SimulatorServer
from tests.conftest import ACME_KEY, GLOBEX_KEY

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"agent": "support-chat", "prompt": "My invoice is wrong", "stream": False}


@pytest.fixture
def books(settings):
    """A simulator of our own, billing on its own port like the real host."""
    with SimulatorServer(keys=(ACME_KEY, GLOBEX_KEY), billing_port=True) as sim:
        settings.RUNTOOLS_API_URL = sim.url
        settings.RUNTOOLS_BILLING_URL = sim.billing_url
        settings.RTDASH_BILLING_TIMEOUT = 1.0
        yield sim


@pytest.fixture
def through_rtdash(async_client, books, acme_key, acme_token):
    async def run(body=BODY) -> dict:
        response = await async_client.post(
            "/v1/run", body, content_type="application/json", headers={"X-API-Key": acme_token[1]}
        )
        await settle()
        assert response.status_code == 200
        return response.json()["data"]

    return run


def direct(sim: SimulatorServer, key: str = ACME_KEY, body=BODY) -> dict:
    """A run made with the team's key without rtdash."""
    response = httpx.post(f"{sim.url}/run", json=body, headers={"X-API-Key": key}, timeout=10)
    response.raise_for_status()
    return response.json()["data"]


def arm(sim: SimulatorServer, path: str, simulate: dict, times: int = 1, key: str = ACME_KEY):
    body = {"path": path, "method": "GET", "times": times, "simulate": simulate}
    response = httpx.post(f"{sim.root}/_simulate/faults", json=body, headers={"X-API-Key": key})
    assert response.status_code == 201


async def test_totals_match_when_every_run_went_through_rtdash(through_rtdash, acme):
    await through_rtdash()
    await through_rtdash({**BODY, "agent": "deep-thinker"})
    result = await sync_to_async(reconcile)(acme, "current")
    assert result.problems == []
    assert result.scope == "org" and result.scope_note == ""
    assert result.upstream.runs == result.recorded.runs == 2
    assert result.upstream.total == result.recorded.total > 0
    assert (result.upstream.input, result.upstream.output) == (
        result.recorded.input,
        result.recorded.output,
    )
    assert result.difference == 0 and result.outside_count == 0
    # Each completed run is one ledger entry tied to it: RunTools' charge beside rtdash's price.
    runs = {run.upstream_run_id: run async for run in Run.objects.all()}
    assert {charge.upstream_run_id for charge in result.run_charges} == set(runs)
    assert all(charge.charged_cents >= 1 for charge in result.run_charges)
    assert result.charged_cents == sum(charge.charged_cents for charge in result.run_charges)
    assert result.balance_cents == 10_500 - result.charged_cents


async def test_a_run_made_outside_rtdash_is_listed_and_explains_the_difference(
    through_rtdash, books, acme
):
    await through_rtdash()
    outside = await sync_to_async(direct)(books, body={**BODY, "agent": "code-assistant"})
    result = await sync_to_async(reconcile)(acme, "7d")
    assert result.outside_count == 1
    [listed] = result.outside_runs
    assert listed.id == outside["runId"] and listed.status == "completed"
    assert listed.agent and listed.created_at
    assert listed.total_tokens == outside["usage"]["totalTokens"]
    assert result.difference == outside["usage"]["totalTokens"] == result.outside_tokens
    assert result.upstream.runs == 2 and result.recorded.runs == 1


async def test_runs_still_followed_and_without_usage_are_listed(through_rtdash, acme):
    await through_rtdash({**BODY, "metadata": {"simulate": {"runStatus": "registered"}}})
    result = await sync_to_async(reconcile)(acme, "30d")
    assert result.following_count == 1
    assert result.following[0]["status"] == "registered"


async def test_a_key_that_is_not_an_admins_falls_back_to_its_own_usage(books, globex, globex_key):
    await sync_to_async(direct)(books, key=GLOBEX_KEY)
    result = await sync_to_async(reconcile)(globex, "current")
    assert result.problems == []
    assert result.scope == "user" and "not an organisation admin" in result.scope_note
    assert result.upstream.runs == 1 and result.outside_count == 1


FAILURES = {
    "401": ({"status": 401}, "refused the team's key (401)"),
    "503": ({"status": 503}, "is failing (HTTP 503)"),
    "hang": ({"hangSeconds": 5}, "did not answer within 1 s"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_billing_failing_is_plain_words_on_the_page_and_an_envelope_on_the_api(
    through_rtdash, books, async_client, alice, acme_token, failure
):
    await through_rtdash()
    simulate, words = FAILURES[failure]
    await sync_to_async(arm)(books, "/billing/my-usage", simulate)
    await async_client.aforce_login(alice)
    page = await async_client.get("/accounting/reconciliation")
    assert page.status_code == 200
    text = html.unescape(page.content.decode())
    assert words in text and "What could not be read" in text
    assert ACME_KEY not in text
    await sync_to_async(arm)(books, "/billing/my-usage", simulate)
    answer = await async_client.get("/api/reconciliation", headers={"X-API-Key": acme_token[1]})
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert words in error["message"] and error["code"].startswith("runtools_")
    assert error["partial"]["rtdash"]["runs"] == 1
    assert ACME_KEY not in answer.content.decode()


async def test_the_ledger_failing_leaves_the_rest(through_rtdash, books, async_client, acme_token):
    await through_rtdash()
    await sync_to_async(arm)(books, "/billing/credits/history", {"status": 500})
    answer = await async_client.get(
        "/api/reconciliation?period=7d", headers={"Authorization": f"Bearer {acme_token[1]}"}
    )
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert data["difference"] == 0 and data["credits"]["balanceCents"] is not None
    assert data["credits"]["chargedCents"] is None
    assert [problem["what"] for problem in data["problems"]] == ["ledger"]


# --- Who may see it --------------------------------------------------------------------------


async def test_anonymous_is_sent_to_login_and_the_api_is_401(async_client, books):
    page = await async_client.get("/accounting/reconciliation")
    assert page.status_code == 302 and "/login" in page["Location"]
    answer = await async_client.get("/api/reconciliation")
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("persona", ["bob", "victor"])
async def test_members_and_viewers_get_404(async_client, books, request, persona):
    user = await sync_to_async(request.getfixturevalue)(persona)
    await async_client.aforce_login(user)
    assert (await async_client.get("/accounting/reconciliation")).status_code == 404
    answer = await async_client.get("/api/reconciliation")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


async def test_an_outsider_sees_only_their_own_team(
    through_rtdash, async_client, charlie, globex_key, globex_token
):
    await through_rtdash()  # acme's run
    await async_client.aforce_login(charlie)
    answer = await async_client.get("/api/reconciliation")
    assert answer.json()["data"]["team"] == "globex"
    assert answer.json()["data"]["rtdash"]["runs"] == 0
    by_token = await async_client.get("/api/reconciliation", headers={"X-API-Key": globex_token[1]})
    assert by_token.json()["data"]["team"] == "globex"
    page = await async_client.get("/accounting/reconciliation")
    assert page.status_code == 200 and b"acme" not in page.content.lower()


async def test_bad_periods_and_methods(async_client, books, alice, acme_key):
    await async_client.aforce_login(alice)
    answer = await async_client.get("/api/reconciliation?period=all_time")
    assert (
        answer.status_code == 400 and "period must be one of" in answer.json()["error"]["message"]
    )
    assert (await async_client.get("/accounting/reconciliation?period=x")).status_code == 400
    assert (await async_client.post("/api/reconciliation")).status_code == 405
    assert (await async_client.post("/accounting/reconciliation")).status_code == 405


async def test_a_revoked_token_is_401(async_client, books, acme_token):
    await sync_to_async(acme_token[0].revoke)()
    answer = await async_client.get("/api/reconciliation", headers={"X-API-Key": acme_token[1]})
    assert answer.status_code == 401


# --- manage.py reconcile ---------------------------------------------------------------------


def reconcile_command(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("reconcile", *args, stdout=out)
    except CommandError as error:
        return error.returncode, out.getvalue() + str(error)
    return 0, out.getvalue()


async def test_the_command_exits_by_the_difference(through_rtdash, books, acme):
    await through_rtdash()
    code, out = await sync_to_async(reconcile_command)("--team", "acme", "--period", "30d")
    assert code == 0 and "Difference: 0 tokens" in out
    await sync_to_async(direct)(books)
    code, out = await sync_to_async(reconcile_command)("--team", "acme", "--threshold", "5")
    assert code == 1 and "Outside rtdash: 1 run(s)" in out and "exceeds 5%" in out
    code, _ = await sync_to_async(reconcile_command)("--team", "acme", "--threshold", "100")
    assert code == 0


async def test_the_command_exits_2_when_billing_is_down(through_rtdash, books, acme):
    await sync_to_async(arm)(books, "/billing/my-usage", {"status": 502})
    code, out = await sync_to_async(reconcile_command)("--team", "acme")
    assert code == 2 and "is failing (HTTP 502)" in out


async def test_the_command_refuses_an_unknown_team(db):
    code, out = await sync_to_async(reconcile_command)("--team", "nobody")
    assert code == 1 and "No team" in out


async def test_the_reports_page_links_to_it_for_managers_only(async_client, books, alice, bob):
    await async_client.aforce_login(alice)
    assert b'href="/accounting/reconciliation"' in (await async_client.get("/reports")).content
    await async_client.aforce_login(bob)
    assert b'href="/accounting/reconciliation"' not in (await async_client.get("/reports")).content
