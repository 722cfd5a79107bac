"""Budgets: a name no run or RunTools agent has is questioned before it is saved, and saving
and deleting say what they did."""

from __future__ import annotations

import pytest

from runs.models import Budget
from tests.conftest import PASSWORD
from tests.reporting import finished_run

SET = "/reports/budgets/set"


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


def limit(agent: str, **extra) -> dict:
    return {"agent": agent, "monthly_limit": "50", "warn_percent": "80", **extra}


@pytest.mark.django_db
@pytest.mark.parametrize("htmx", [False, True])
def test_an_unknown_agent_is_questioned_before_it_is_saved(client, alice, acme, htmx):
    headers = {"HX-Request": "true"} if htmx else {}
    response = login(client, alice).post(SET, limit("code-asistant"), headers=headers)
    assert response.status_code == 200
    body = response.content.decode()
    assert "No run of this team and no RunTools agent is named “code-asistant”" in body
    assert 'name="confirm_agent" value="code-asistant"' in body
    assert "Save anyway" in body
    assert not Budget.objects.exists()
    # Saving again with the confirmation keeps the name as typed.
    confirmed = client.post(SET, limit("code-asistant", confirm_agent="code-asistant"))
    assert confirmed.status_code == 302
    assert Budget.objects.get(team=acme).agent == "code-asistant"


@pytest.mark.django_db
def test_a_confirmation_for_another_name_does_not_count(client, alice, acme):
    response = login(client, alice).post(SET, limit("typo-two", confirm_agent="typo-one"))
    assert response.status_code == 200 and "Save anyway" in response.content.decode()
    assert not Budget.objects.exists()


@pytest.mark.django_db
def test_an_agent_with_runs_and_the_whole_team_save_at_once(client, alice, acme):
    finished_run(acme, agent="code-assistant")
    login(client, alice)
    assert client.post(SET, limit("code-assistant")).status_code == 302
    assert client.post(SET, limit("")).status_code == 302
    assert Budget.objects.filter(team=acme).count() == 2


@pytest.mark.django_db
def test_an_agent_runtools_lists_saves_at_once(client, alice, acme, acme_key, upstream):
    # The simulator (a real server on loopback) lists support-chat; it has never run here.
    response = login(client, alice).post(SET, limit("support-chat"))
    assert response.status_code == 302
    assert Budget.objects.get(team=acme).agent == "support-chat"


@pytest.mark.django_db
def test_saving_and_deleting_say_what_they_did(client, alice, acme):
    finished_run(acme, agent="code-assistant")
    login(client, alice)
    saved = client.post(SET, limit("code-assistant"), follow=True).content.decode()
    assert "Saved the agent code-assistant budget: $50.00/month, warn at 80%." in saved
    budget = Budget.objects.get(team=acme)
    deleted = client.post(f"/reports/budgets/{budget.pk}/delete", follow=True).content.decode()
    assert "Deleted the agent code-assistant budget." in deleted
    # With htmx the section itself carries the message.
    client.post(SET, limit(""))
    team_budget = Budget.objects.get(team=acme, agent="")
    section = client.post(
        f"/reports/budgets/{team_budget.pk}/delete", headers={"HX-Request": "true"}
    ).content.decode()
    assert section.startswith('<section id="budgets"')
    assert 'role="status">Deleted the team budget.' in section
