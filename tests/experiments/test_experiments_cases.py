"""How cases run and compare: the concurrency bound, threads recorded with `messages`, runs
picked on the runs list, per-case cost changes and per-case regressions in CI."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from runs.models import Experiment, Run, Trial
from tests.experiments.helpers import post, wait_until_ended
from tests.helpers import gateway_run
from tests.reporting import set_price

pytestmark = [pytest.mark.usefixtures("fast_passwords"), pytest.mark.django_db(transaction=True)]


@pytest.fixture
def token(upstream, acme_key, acme_token) -> str:
    return acme_token[1]


def replayed_runs(experiment_id: int) -> list[Run]:
    trials = Trial.objects.filter(variant__experiment_id=experiment_id).select_related("run")
    return [t.run for t in trials.order_by("variant__position", "case__position")]


def test_no_more_than_the_concurrency_setting_run_at_once(client, token, settings):
    settings.RTDASH_EXPERIMENT_CONCURRENCY = 2
    slow = {"agent": "support-chat", "metadata": {"simulate": {"dripMs": 40, "deltas": 12}}}
    body = {"source": {"prompts": [f"case {n}" for n in range(6)]}, "variants": [slow]}
    response = post(client, body, HTTP_X_API_KEY=token)
    assert response.status_code == 201, response.content
    experiment_id = response.json()["data"]["id"]
    assert wait_until_ended(experiment_id).status == "completed"
    runs = replayed_runs(experiment_id)
    assert len(runs) == 6 and {r.status for r in runs} == {"completed"}
    # How many of its runs were in flight when each one started, from the recorded times.
    in_flight = [
        sum(1 for other in runs if other.started_at <= run.started_at < other.finished_at)
        for run in runs
    ]
    assert max(in_flight) == 2, in_flight


def test_a_thread_recorded_with_messages_replays_each_turns_last_user_message(client, token):
    first_ask = [{"role": "user", "content": "Check app/models.py"}]
    first = gateway_run(token, {"agent": "code-assistant", "messages": first_ask})
    second_ask = [
        *first_ask,
        {"role": "assistant", "content": "The original answer, which a variant must not see."},
        {"role": "user", "content": "", "parts": [{"type": "text", "text": "Go on"}]},
    ]
    second = gateway_run(
        token,
        {"agent": "code-assistant", "messages": second_ask, "threadId": first.upstream_thread_id},
    )
    assert second.upstream_thread_id == first.upstream_thread_id and second.messages
    body = {"source": {"thread": first.upstream_thread_id}, "variants": [{"agent": "support-chat"}]}
    experiment_id = post(client, body, HTTP_X_API_KEY=token).json()["data"]["id"]
    assert wait_until_ended(experiment_id).status == "completed"
    runs = replayed_runs(experiment_id)
    # Each turn is its last user message, asked in the variant's own thread.
    assert [(r.prompt, r.messages) for r in runs] == [
        ("Check app/models.py", None),
        ("Go on", None),
    ]
    assert runs[0].upstream_thread_id == runs[1].upstream_thread_id != first.upstream_thread_id
    data = client.get(f"/api/experiments/{experiment_id}", HTTP_X_API_KEY=token).json()["data"]
    assert [t["prompt"] for t in data["variants"][0]["turns"]] == ["Check app/models.py", "Go on"]

    # Runs as the source are independent: their messages are replayed as given.
    body = {"source": {"runs": [second.pk]}, "variants": [{"agent": "support-chat"}]}
    experiment_id = post(client, body, HTTP_X_API_KEY=token).json()["data"]["id"]
    assert wait_until_ended(experiment_id).status == "completed"
    (run,) = replayed_runs(experiment_id)
    assert run.messages == second_ask and run.prompt == second.prompt


def test_runs_ticked_on_the_runs_list_become_the_cases(client, bob, token):
    runs = [gateway_run(token, {"agent": "support-chat", "prompt": f"ask {n}"}) for n in range(3)]
    client.force_login(bob)
    html = client.get(reverse("run_list")).content.decode()
    table = html[html.index('<form id="replay-selected"') :]
    table = table[: table.index("</form>")]
    assert f'action="{reverse("experiment_new")}"' in table and "Replay selected" in table
    assert '<input type="hidden" name="picked" value="1">' in table
    for run in runs:
        assert f'<input type="checkbox" name="runs" value="{run.pk}"' in table
    assert "at most 100" in html and "(at most 50)" in html  # the caps, said on the page
    # Without JavaScript: the form's GET carries one `runs` per ticked row.
    picked = [runs[2].pk, runs[0].pk]
    form = client.get(reverse("experiment_new"), {"runs": picked}).content.decode()
    assert f'value="{picked[0]},{picked[1]}"' in form
    response = client.post(
        reverse("experiment_new"),
        {"runs": f"{picked[0]},{picked[1]}", "variants": "agent=code-assistant"},
    )
    assert response.status_code == 302
    experiment = wait_until_ended(Experiment.objects.latest("pk").pk)
    assert experiment.status == "completed"
    assert [c.baseline_run_id for c in experiment.cases.all()] == picked
    assert [r.prompt for r in replayed_runs(experiment.pk)] == ["ask 2", "ask 0"]


def test_more_runs_than_the_cap_is_a_form_error(client, bob, token):
    client.force_login(bob)
    # The runs list's form with no row ticked sends only its `picked` marker.
    nothing = client.get(reverse("experiment_new") + "?picked=1").content.decode()
    assert "No run was ticked" in nothing
    assert "No run was ticked" not in client.get(reverse("experiment_new")).content.decode()
    ids = ",".join(str(n) for n in range(1, 102))
    response = client.post(reverse("experiment_new"), {"runs": ids, "variants": "agent=a"})
    assert response.status_code == 200
    assert "at most 100 runs" in response.content.decode()
    assert not Experiment.objects.exists()


def test_the_page_shows_each_cases_cost_change_in_percent(client, bob, token, acme):
    set_price(acme)
    client.force_login(bob)
    response = client.post(
        reverse("experiment_new"),
        {
            "prompts": "Explain the retry policy",
            "variants": "agent=support-chat\nagent=deep-thinker",
        },
    )
    assert response.status_code == 302
    experiment = wait_until_ended(Experiment.objects.latest("pk").pk)
    cheap, dear = replayed_runs(experiment.pk)
    assert dear.cost > cheap.cost > 0
    percent = (dear.cost - cheap.cost) / cheap.cost * 100
    html = client.get(reverse("experiment_detail", args=[experiment.pk])).content.decode()
    shown = re.findall(r'class="cost-change"[^>]*>([^<]*)</span>', html)
    assert shown == [f"▲ {percent:+.1f}%"]
    assert Decimal(shown[0].split()[1].rstrip("%")) > 0


def test_the_command_fails_when_a_variant_fails_a_case_the_baseline_passed(token, capsys):
    first = gateway_run(token, {"agent": "support-chat", "prompt": "Draft a reply"})
    thread_id = first.upstream_thread_id
    failing = '{"agent": "support-chat", "metadata": {"simulate": {"errorAfter": 2}}}'
    command = ["experiment", "run", "--team", "acme", "--thread", thread_id]
    with pytest.raises(CommandError, match="1 regression"):
        call_command(*command, "--variant", "agent=support-chat", "--variant", failing)
    captured = capsys.readouterr()
    assert "REGRESSION support-chat: case 1 failed (baseline passed)" in captured.err
    assert captured.err.count("REGRESSION") == 1  # the passing variant is not one
    # The same thread, every variant passing: exit 0.
    call_command(*command, "--variant", "agent=support-chat")
    assert "no regressions" in capsys.readouterr().out
