"""GET /api/usage: the report as JSON, for a session or an rtdash token, scoped to that team."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from runs.models import GatewayToken
from runs.reports.queries import make_period, usage_report
from tests.helpers import login
from tests.reporting import finished_run, set_price

pytestmark = pytest.mark.django_db

USAGE = {"inputTokens": 1480, "outputTokens": 322, "cachedInputTokens": 480}


@pytest.fixture
def usage(acme, alice, acme_token):
    set_price(acme, agent="code-assistant", since=timezone.now().date() - timedelta(days=30),
              cached_input_per_million="0.3")  # fmt: skip
    token = acme_token[0]
    for days in (0, 1, 2, 10):
        finished_run(acme, usage=USAGE, token=token, started_at=timezone.now() - timedelta(days))
    finished_run(acme, agent="mystery", usage=USAGE, source="playground", user=alice)


def bearer(plaintext: str) -> dict:
    return {"Authorization": f"Bearer {plaintext}"}


def test_a_token_reads_its_teams_usage(client, usage, acme_token):
    response = client.get("/api/usage?group_by=agent", headers={"X-API-Key": acme_token[1]})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["team"] == "acme" and data["groupBy"] == "agent"
    groups = {group["key"]: group for group in data["groups"]}
    assert groups["code-assistant"]["runs"] == 4
    # (1480 - 480) * $3/M + 480 * $0.3/M + 322 * $15/M = $0.007974, four times, exactly
    assert Decimal(groups["code-assistant"]["cost"]) == 4 * Decimal("0.007974")
    assert groups["code-assistant"]["cachedInputTokens"] == 4 * 480
    assert groups["mystery"]["cost"] is None and groups["mystery"]["unpricedRuns"] == 1
    assert data["totals"]["runs"] == 5


def test_bearer_works_too(client, usage, acme_token):
    response = client.get("/api/usage", headers=bearer(acme_token[1]))
    assert response.status_code == 200


def test_since_and_until_bound_the_days(client, usage, acme_token):
    today = timezone.now().date()
    since, until = today - timedelta(days=2), today - timedelta(days=1)
    response = client.get(
        f"/api/usage?group_by=day&since={since}&until={until}", headers=bearer(acme_token[1])
    )
    data = response.json()["data"]
    assert (data["since"], data["until"]) == (since.isoformat(), until.isoformat())
    assert [group["key"] for group in data["groups"]] == [since.isoformat(), until.isoformat()]


@pytest.mark.parametrize("group_by", ["agent", "user", "token", "day", "thread"])
def test_it_matches_the_report(client, acme, usage, acme_token, group_by):
    response = client.get(f"/api/usage?group_by={group_by}", headers=bearer(acme_token[1]))
    report = usage_report(acme, make_period("30d"), group_by)
    assert response.json()["data"]["groups"] == [row.as_dict() for row in report.rows]


def test_a_session_reads_its_current_team(client, bob, usage):
    login(client, bob)
    response = client.get("/api/usage?group_by=agent")
    assert response.status_code == 200
    assert response.json()["data"]["team"] == "acme"


def test_an_outsider_token_sees_only_its_team(client, usage, globex_token):
    response = client.get("/api/usage?group_by=agent", headers=bearer(globex_token[1]))
    data = response.json()["data"]
    assert data["team"] == "globex" and data["groups"] == [] and data["totals"]["runs"] == 0


def test_an_outsider_session_sees_only_its_team(client, charlie, usage):
    login(client, charlie)
    body = client.get("/api/usage?group_by=agent").content.decode()
    assert '"team": "globex"' in body and "code-assistant" not in body


def test_anonymous_is_refused(client, usage):
    response = client.get("/api/usage")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("plaintext", ["rtd_nope", "Bearer", "x" * 300])
def test_a_wrong_token_is_refused(client, usage, plaintext):
    response = client.get("/api/usage", headers={"X-API-Key": plaintext})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


def test_a_revoked_token_is_refused(client, usage, acme_token):
    token, plaintext = acme_token
    token.revoke()
    assert client.get("/api/usage", headers=bearer(plaintext)).status_code == 401


def test_a_wrong_token_is_refused_even_with_a_session(client, alice, usage):
    login(client, alice)
    assert client.get("/api/usage", headers=bearer("rtd_wrong")).status_code == 401


def test_the_tokens_rate_limit_applies(client, acme, usage):
    _token, plaintext = GatewayToken.issue(acme, "slow", requests_per_minute=2)
    codes = [client.get("/api/usage", headers=bearer(plaintext)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


@pytest.mark.parametrize(
    "query", ["group_by=planet", "since=soon", "since=2026-02-01&until=2026-01-01", "period=x"]
)
def test_a_bad_query_is_a_clear_400(client, usage, acme_token, query):
    response = client.get(f"/api/usage?{query}", headers=bearer(acme_token[1]))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_request" and error["message"]


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_it_rejects_other_methods(client, acme_token, method):
    response = getattr(client, method)("/api/usage", headers=bearer(acme_token[1]))
    assert response.status_code == 405


def test_a_user_without_a_team_gets_404(client, dave):
    login(client, dave)
    assert client.get("/api/usage").status_code == 404
