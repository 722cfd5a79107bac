"""Experiments through /api/experiments against the real simulator: a thread replayed turn by
turn, a prompt set, runs as the source, budget stop, Stop, a dead worker, tenancy, bad input."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from runs.experiments.runner import reap_stale_experiments
from runs.models import Budget, Experiment, Run, Trial
from tests.experiments.helpers import post, recorded_thread, wait_until_ended
from tests.helpers import gateway_run
from tests.reporting import set_price

pytestmark = [pytest.mark.usefixtures("fast_passwords"), pytest.mark.django_db(transaction=True)]

VARIANTS = [
    {"agent": "code-assistant", "config": {"maxTurns": 2}},
    {"agent": "support-chat", "config": {"temperature": 0.2}, "metadata": {"label": "b"}},
]


@pytest.fixture
def token(upstream, acme_key, acme_token) -> str:
    return acme_token[1]


def auth(token: str) -> dict:
    return {"HTTP_X_API_KEY": token}


def read(client, token: str, experiment_id: int) -> dict:
    response = client.get(f"/api/experiments/{experiment_id}", **auth(token))
    assert response.status_code == 200, response.content
    return response.json()["data"]


def test_a_thread_is_replayed_turn_by_turn_each_variant_in_its_own_thread(client, token):
    thread_id, originals = recorded_thread(token)
    response = post(
        client,
        {"name": "two", "source": {"thread": thread_id}, "variants": VARIANTS},
        **auth(token),
    )
    assert response.status_code == 201, response.content
    created = response.json()["data"]
    assert created["url"] == f"/experiments/{created['id']}/"
    assert wait_until_ended(created["id"]).status == "completed"
    data = read(client, token, created["id"])
    assert data["status"] == "completed"
    assert [t["runId"] for t in data["baseline"]["turns"]] == [r.pk for r in originals]
    threads = set()
    for variant, spec in zip(data["variants"], VARIANTS, strict=True):
        assert variant["agent"] == spec["agent"] and variant["config"] == spec["config"]
        assert [t["prompt"] for t in variant["turns"]] == ["Check app/models.py", "Go on"]
        runs = [Run.objects.get(pk=t["runId"]) for t in variant["turns"]]
        # In order, in one fresh thread of the variant's own.
        assert runs[0].started_at < runs[1].started_at
        assert runs[0].upstream_thread_id == runs[1].upstream_thread_id != thread_id
        assert variant["threadId"] == runs[0].upstream_thread_id
        threads.add(runs[0].upstream_thread_id)
        for turn, run in zip(variant["turns"], runs, strict=True):
            assert run.source == "experiment" and run.status == "completed"
            assert run.config == spec["config"]
            assert run.metadata["experiment"] == created["id"]
            # Exactly what the upstream reported, as recorded on the run.
            assert turn["inputTokens"] == run.usage["inputTokens"] > 0
            assert turn["outputTokens"] == run.usage["outputTokens"] > 0
            assert turn["cost"] == (str(run.cost) if run.cost is not None else None)
            assert turn["durationMs"] == run.duration_ms
            assert turn["firstTokenMs"] == run.first_byte_ms
            assert turn["status"] == "completed" and turn["result"] == run.result != ""
        totals = variant["totals"]
        assert totals["inputTokens"] == sum(r.input_tokens for r in runs)
        assert totals["completed"] == 2
    assert len(threads) == 2
    # The second turn continued the thread: its input includes the first turn's conversation.
    second_turn = Run.objects.get(pk=data["variants"][0]["turns"][1]["runId"])
    assert (
        second_turn.input_tokens
        > Run.objects.get(pk=data["variants"][0]["turns"][0]["runId"]).input_tokens
    )


def test_costs_follow_the_teams_prices(client, token, acme):
    set_price(acme)
    thread_id, _ = recorded_thread(token)
    response = post(
        client, {"source": {"thread": thread_id}, "variants": VARIANTS[:1]}, **auth(token)
    )
    experiment_id = response.json()["data"]["id"]
    wait_until_ended(experiment_id)
    turn = read(client, token, experiment_id)["variants"][0]["turns"][0]
    expected = (Decimal(turn["inputTokens"]) * 3 + Decimal(turn["outputTokens"]) * 15) / 1_000_000
    assert Decimal(turn["cost"]) == expected and turn["costStatus"] == "computed"


def test_a_prompt_set_runs_each_prompt_as_a_case(client, token):
    body = {
        "source": {"prompts": ["First question", {"prompt": "Second", "metadata": {"k": "v"}}]},
        "variants": [{"agent": "support-chat"}],
    }
    response = post(client, body, **auth(token))
    assert response.status_code == 201, response.content
    experiment_id = response.json()["data"]["id"]
    assert wait_until_ended(experiment_id).status == "completed"
    data = read(client, token, experiment_id)
    assert "baseline" not in data
    turns = data["variants"][0]["turns"]
    assert [t["prompt"] for t in turns] == ["First question", "Second"]
    runs = [Run.objects.get(pk=t["runId"]) for t in turns]
    assert [r.prompt for r in runs] == ["First question", "Second"]
    assert runs[1].metadata["k"] == "v"
    # Independent cases: each in its own thread.
    assert runs[0].upstream_thread_id != runs[1].upstream_thread_id


def test_runs_are_a_source_with_their_originals_as_baseline(client, token):
    one = gateway_run(token, {"agent": "support-chat", "prompt": "Draft a reply"})
    two = gateway_run(token, {"agent": "code-assistant", "prompt": "Run the tests"})
    body = {"source": {"runs": [two.pk, one.pk]}, "variants": [{"agent": "deep-thinker"}]}
    response = post(client, body, **auth(token))
    experiment_id = response.json()["data"]["id"]
    assert wait_until_ended(experiment_id).status == "completed"
    data = read(client, token, experiment_id)
    assert [t["runId"] for t in data["baseline"]["turns"]] == [two.pk, one.pk]
    replayed = [Run.objects.get(pk=t["runId"]) for t in data["variants"][0]["turns"]]
    assert [r.prompt for r in replayed] == ["Run the tests", "Draft a reply"]
    assert {r.agent for r in replayed} == {"deep-thinker"}


def test_a_hard_budget_stops_it_with_the_budgets_error(client, token, acme, settings):
    settings.RTDASH_EXPERIMENT_CONCURRENCY = 1
    set_price(acme, input_per_million=1_000_000)
    Budget.objects.create(team=acme, monthly_limit=Decimal("1.00"), hard_stop=True)
    body = {"source": {"prompts": ["one", "two", "three"]}, "variants": [{"agent": "support-chat"}]}
    experiment_id = post(client, body, **auth(token)).json()["data"]["id"]
    experiment = wait_until_ended(experiment_id)
    assert experiment.status == "failed" and "budget" in experiment.error_message
    turns = read(client, token, experiment_id)["variants"][0]["turns"]
    assert turns[0]["status"] == "completed" and turns[0]["runId"]
    for turn in turns[1:]:
        assert turn["runId"] is None and turn["status"] == "skipped"
        assert turn["error"]["code"] == "budget_exceeded"
        assert turn["error"]["message"] == experiment.error_message
    assert Run.objects.filter(source="experiment").count() == 1


def test_cancel_stops_the_running_case_and_skips_the_rest(client, token, settings):
    settings.RTDASH_EXPERIMENT_CONCURRENCY = 1
    slow = {"agent": "slow-poke", "metadata": {"simulate": {"dripMs": 200, "deltas": 200}}}
    body = {"source": {"prompts": ["a", "b", "c"]}, "variants": [slow]}
    experiment_id = post(client, body, **auth(token)).json()["data"]["id"]
    deadline = timezone.now().timestamp() + 20
    while not Run.objects.filter(source="experiment", status="running").exists():
        assert timezone.now().timestamp() < deadline
    response = client.post(f"/api/experiments/{experiment_id}/cancel", **auth(token))
    assert response.status_code == 202
    experiment = wait_until_ended(experiment_id, timeout=20)
    assert experiment.status == "cancelled"
    turns = read(client, token, experiment_id)["variants"][0]["turns"]
    assert Run.objects.get(pk=turns[0]["runId"]).status == "cancelled"
    assert [t["status"] for t in turns[1:]] == ["skipped", "skipped"]
    assert {t["error"]["code"] for t in turns[1:]} == {"cancelled"}


def test_an_experiment_whose_worker_died_is_ended_not_left_running(client, token, acme):
    thread_id, _ = recorded_thread(token)
    # Recorded as a dead worker leaves it: running, no task here, heartbeat long stale.
    from runs.experiments.create import create_experiment
    from runs.experiments.spec import parse_spec

    spec = parse_spec({"source": {"thread": thread_id}, "variants": VARIANTS})
    experiment = create_experiment(acme, spec)
    Experiment.objects.filter(pk=experiment.pk).update(
        heartbeat_at=timezone.now() - timezone.timedelta(minutes=10)
    )
    assert read(client, token, experiment.pk)["status"] == "failed"  # reaped on read
    experiment.refresh_from_db()
    assert experiment.status == "failed" and "worker" in experiment.error_message
    assert set(
        Trial.objects.filter(variant__experiment=experiment).values_list("status", flat=True)
    ) == {"skipped"}
    assert reap_stale_experiments() == []  # once


def test_a_live_experiment_is_not_reaped(acme):
    experiment = Experiment.objects.create(team=acme, name="x", source_kind="prompts")
    assert reap_stale_experiments() == []
    assert Experiment.objects.get(pk=experiment.pk).status == "running"


# --- Tenancy, auth and bad input ------------------------------------------------------------


def test_another_teams_thread_or_runs_are_404(client, token, globex_token, globex_key):
    thread_id, runs = recorded_thread(token)
    other = {"HTTP_X_API_KEY": globex_token[1]}
    for source in ({"thread": thread_id}, {"runs": [runs[0].pk]}):
        response = post(client, {"source": source, "variants": VARIANTS}, **other)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert not Experiment.objects.exists()


def test_another_teams_experiment_is_404(client, token, globex_token):
    experiment_id = post(
        client, {"source": {"prompts": ["hi"]}, "variants": VARIANTS[:1]}, **auth(token)
    ).json()["data"]["id"]
    wait_until_ended(experiment_id)
    other = {"HTTP_X_API_KEY": globex_token[1]}
    assert client.get(f"/api/experiments/{experiment_id}", **other).status_code == 404
    assert client.post(f"/api/experiments/{experiment_id}/cancel", **other).status_code == 404


def test_a_session_works_and_anonymous_is_401(client, alice, token):
    assert post(client, {"source": {"prompts": ["x"]}, "variants": VARIANTS}).status_code == 401
    assert client.get("/api/experiments/1").status_code == 401
    client.force_login(alice)
    response = post(client, {"source": {"prompts": ["x"]}, "variants": VARIANTS[:1]})
    assert response.status_code == 201
    wait_until_ended(response.json()["data"]["id"])


def test_a_viewer_cannot_start_one(client, victor, token):
    client.force_login(victor)
    response = post(client, {"source": {"prompts": ["x"]}, "variants": VARIANTS[:1]})
    assert response.status_code == 404
    assert not Experiment.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"variants": VARIANTS}, "source"),
        ({"source": {"thread": 5}, "variants": VARIANTS}, "source.thread"),
        ({"source": {"runs": []}, "variants": VARIANTS}, "source.runs"),
        ({"source": {"runs": [True]}, "variants": VARIANTS}, "source.runs"),
        ({"source": {"prompts": ["ok", 3]}, "variants": VARIANTS}, "source.prompts[1]"),
        ({"source": {"prompts": [""]}, "variants": VARIANTS}, "source.prompts[0].prompt"),
        ({"source": {"nope": 1}, "variants": VARIANTS}, "source"),
        ({"source": {"prompts": ["x"]}}, "variants"),
        ({"source": {"prompts": ["x"]}, "variants": [{}]}, "variants[0].agent"),
        (
            {"source": {"prompts": ["x"]}, "variants": [{"agent": "a", "config": {"maxTurns": 0}}]},
            "variants[0].config.maxTurns",
        ),
        (
            {"source": {"prompts": ["x"]}, "variants": [{"agent": "a", "config": {"top": 1}}]},
            "variants[0].config.top",
        ),
        ({"name": 3, "source": {"prompts": ["x"]}, "variants": VARIANTS}, "name"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(client, token, body, field):
    response = post(client, body, **auth(token))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "bad_request" and error["field"] == field
    assert field.split("[")[0].split(".")[0] in error["message"] or field == "body"
    assert not Experiment.objects.exists()


def test_non_json_and_nan_are_400(client, token):
    for raw in (b"{", b'{"source": {"prompts": [NaN]}, "variants": []}'):
        response = client.post(
            "/api/experiments", raw, content_type="application/json", **auth(token)
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "bad_request"


def test_wrong_methods_are_405(client, token):
    assert client.get("/api/experiments", **auth(token)).status_code == 405
    assert client.post("/api/experiments/1", **auth(token)).status_code == 405
    assert client.get("/api/experiments/1/cancel", **auth(token)).status_code == 405
