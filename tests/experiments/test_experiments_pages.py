"""Experiment pages: entry points, the new form, the side-by-side page, Stop, tenancy; and the
management command's table and exit status."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from runs.models import Experiment, Run
from tests.experiments.helpers import recorded_thread, wait_until_ended
from tests.reporting import set_price

pytestmark = [pytest.mark.usefixtures("fast_passwords"), pytest.mark.django_db(transaction=True)]


@pytest.fixture
def token(upstream, acme_key, acme_token) -> str:
    return acme_token[1]


def start(client, **fields) -> Experiment:
    response = client.post(reverse("experiment_new"), fields)
    assert response.status_code == 302, response.content.decode()
    experiment = Experiment.objects.latest("pk")
    assert response["Location"] == reverse("experiment_detail", args=[experiment.pk])
    return wait_until_ended(experiment.pk)


def test_the_thread_page_offers_replay_and_the_nav_links_experiments(client, bob, token):
    thread_id, _ = recorded_thread(token)
    client.force_login(bob)
    html = client.get(reverse("thread_detail", args=[thread_id])).content.decode()
    assert f"{reverse('experiment_new')}?thread={thread_id}&amp;agent=code-assistant" in html
    assert f'href="{reverse("experiment_list")}"' in html
    form = client.get(f"{reverse('experiment_new')}?thread={thread_id}&agent=code-assistant")
    page = form.content.decode()
    assert "fresh thread of its own" in page and "agent=code-assistant" in page


def test_the_runs_list_offers_replay_as_experiment(client, bob, token):
    _, runs = recorded_thread(token)
    client.force_login(bob)
    html = client.get(reverse("run_list")).content.decode()
    assert "Replay as experiment" in html
    assert f'name="runs" value="{runs[1].pk},{runs[0].pk}"' in html


def test_a_thread_replayed_from_the_page_shows_baseline_and_variants(client, bob, token, acme):
    set_price(acme)
    thread_id, _ = recorded_thread(token)
    client.force_login(bob)
    experiment = start(
        client,
        thread=thread_id,
        variants="agent=code-assistant,maxTurns=2\nagent=support-chat,temperature=0.5",
    )
    assert experiment.status == "completed" and experiment.created_by == bob
    html = client.get(reverse("experiment_detail", args=[experiment.pk])).content.decode()
    assert "Baseline (recorded)" in html and "code-assistant · maxTurns=2" in html
    assert "support-chat · temperature=0.5" in html
    assert html.count('<tr class="case">') == 2
    assert 'hx-trigger="every 1s"' not in html  # finished: no more polling
    for run in Run.objects.filter(source="experiment"):
        assert f'href="{reverse("run_detail", args=[run.pk])}"' in html
    # Cost differences against the baseline are marked.
    assert "cost-up" in html or "cost-down" in html
    listed = client.get(reverse("experiment_list")).content.decode()
    assert f'data-experiment="{experiment.pk}"' in listed


def test_pasted_prompts_and_bad_variants(client, bob, token):
    client.force_login(bob)
    response = client.post(
        reverse("experiment_new"), {"prompts": "one\ntwo", "variants": "agent=x,maxTurns=0"}
    )
    assert response.status_code == 200
    assert "variant line 1.config.maxTurns" in response.content.decode()
    assert not Experiment.objects.exists()
    experiment = start(client, prompts='one\n{"prompt": "two"}', variants="agent=support-chat")
    assert [c.prompt for c in experiment.cases.all()] == ["one", "two"]


def test_outsiders_get_404_and_viewers_cannot_start(client, charlie, victor, token):
    thread_id, _ = recorded_thread(token)
    client.force_login(charlie)
    response = client.post(reverse("experiment_new"), {"thread": thread_id, "variants": "agent=a"})
    assert "No such thread or runs" in response.content.decode()
    client.force_login(victor)
    assert client.get(reverse("experiment_new")).status_code == 404
    client.force_login(charlie)
    experiment = Experiment.objects.create(
        team=victor.memberships.get().team, name="x", source_kind="prompts"
    )
    assert client.get(reverse("experiment_detail", args=[experiment.pk])).status_code == 404
    assert client.post(reverse("experiment_stop", args=[experiment.pk])).status_code == 404
    assert not Experiment.objects.get(pk=experiment.pk).cancel_requested


def test_anonymous_is_sent_to_login_and_wrong_methods_are_405(client, alice):
    assert client.get(reverse("experiment_list")).status_code == 302
    client.force_login(alice)
    assert client.post(reverse("experiment_list")).status_code == 405
    assert client.get(reverse("experiment_stop", args=[1])).status_code == 405


def test_the_command_prints_a_table_and_fails_on_a_cost_regression(token, acme, capsys):
    set_price(acme)
    thread_id, _ = recorded_thread(token, agent="support-chat")
    call_command(
        "experiment",
        "run",
        "--team",
        "acme",
        "--thread",
        thread_id,
        "--variant",
        "agent=support-chat,maxTurns=3",
    )
    out = capsys.readouterr().out
    assert "baseline" in out and "support-chat maxTurns=3" in out and "no regressions" in out
    # deep-thinker answers at length: more than 0% over the baseline's cost.
    with pytest.raises(CommandError):
        call_command(
            "experiment",
            "run",
            "--team",
            "acme",
            "--thread",
            thread_id,
            "--variant",
            "agent=deep-thinker",
            "--fail-if-cost-up",
            "0",
        )
    assert "REGRESSION deep-thinker: cost" in capsys.readouterr().err
    with pytest.raises(CommandError, match="no recorded thread"):
        call_command(
            "experiment", "run", "--team", "acme", "--thread", "thr_nope", "--variant", "agent=a"
        )
