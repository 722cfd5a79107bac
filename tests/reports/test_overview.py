"""The overview at /: this month's spend against the budget, today's and this week's runs, the
top agents and threads, the latest runs, each linking to what is behind it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from runs.models import AuditEvent, Budget, Thread
from runs.reports.overview import overview
from tests.helpers import login
from tests.reporting import finished_run, set_price

pytestmark = pytest.mark.django_db

USAGE = {"inputTokens": 1_000_000, "outputTokens": 0}  # $3 at the test default price


@pytest.fixture
def month(acme):
    set_price(acme, since=timezone.now().date() - timedelta(days=400))
    now = timezone.now()
    finished_run(acme, agent="deep-thinker", usage=USAGE, thread_id="thr_big")
    finished_run(acme, agent="deep-thinker", usage=USAGE, thread_id="thr_big")
    finished_run(acme, agent="support-chat", usage={"inputTokens": 1000, "outputTokens": 10})
    finished_run(acme, agent="support-chat", usage=None, status="failed", http_status=500)
    last_month = now.replace(day=1) - timedelta(days=3)
    finished_run(acme, agent="old-agent", usage=USAGE, started_at=last_month)


def test_the_overview_numbers(acme, month):
    data = overview(acme)
    assert data.month.cost == Decimal("6.00315")
    assert (data.today.runs, data.today.failed) == (4, 1)
    assert data.week.runs >= 4
    assert [a.agent for a in data.top_agents] == ["deep-thinker", "support-chat"]
    assert data.threads[0].thread.upstream_id == "thr_big" and data.threads[0].runs == 2
    assert data.threads[0].cost == Decimal("6")
    assert len(data.runs) == 5 and data.runs[0].started_at >= data.runs[-1].started_at


def test_the_page_shows_spend_against_the_budget_with_links(client, alice, acme, month):
    Budget.objects.create(team=acme, monthly_limit=Decimal("10"), warn_percent=50)
    body = login(client, alice).get("/").content.decode()
    assert "$6.00" in body and "60% of $10.00 budget" in body and "$4.00 left" in body
    assert 'href="/reports?period=month&amp;group_by=agent"' in body
    assert 'href="/reports?period=month&amp;group_by=thread"' in body
    assert "deep-thinker" in body and "thr_big" in body
    assert 'class="budget-banner warning"' in body
    assert AuditEvent.objects.filter(team=acme, action="budget_warning").count() == 1


def test_links_lead_to_the_runs_list_when_it_exists(client, alice, acme, month):
    from django.urls import reverse

    body = login(client, alice).get("/").content.decode()
    runs = reverse("run_list")
    today = timezone.now().date().isoformat()
    assert f'href="{runs}?since={today}&amp;until={today}"' in body
    assert f'href="{reverse("thread_detail", args=["thr_big"])}"' in body


def test_unpriced_spend_is_not_shown_as_zero(client, alice, acme):
    finished_run(acme, usage=USAGE)
    body = login(client, alice).get("/").content.decode()
    assert "unpriced" in body
    spend = body[body.index('id="spend-month"') :].split("</a>")[0]
    assert "$0.00" not in spend


def test_an_empty_team_has_an_empty_overview(client, alice):
    response = login(client, alice).get("/")
    assert response.status_code == 200
    assert "No runs yet" in response.content.decode()


def test_it_requires_login(client, acme):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_it_rejects_post(client, alice):
    assert login(client, alice).post("/").status_code == 405


def test_an_outsider_sees_only_their_own_team(client, charlie, globex, acme, month):
    body = login(client, charlie).get("/").content.decode()
    assert "Globex" in body
    assert "deep-thinker" not in body and "thr_big" not in body and "$6.00" not in body


def test_a_thread_id_no_url_can_hold_is_listed_unlinked(client, alice, acme, month):
    """RunTools' thread ids are its own: one with a slash has no page here, so the overview
    lists it linked to its runs instead of failing."""
    from django.urls import reverse

    Thread.objects.filter(team=acme, upstream_id="thr_big").update(upstream_id="thr/big")
    response = login(client, alice).get("/")
    assert response.status_code == 200
    body = response.content.decode()
    assert f'href="{reverse("run_list")}?thread=thr/big"' in body
    assert "/threads/thr/" not in body
