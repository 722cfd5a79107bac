"""A worker dying mid-experiment: the maintenance thread ends it without anyone reading it, and
Resume re-runs only what did not finish, continuing each variant's own thread."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from runs.experiments.create import create_experiment
from runs.experiments.runner import run_experiment
from runs.experiments.spec import parse_spec
from runs.models import Experiment, Run, Trial, Variant
from runs.pipeline.reaper import Maintenance
from tests.experiments.helpers import recorded_thread, wait_until_ended

pytestmark = [pytest.mark.usefixtures("fast_passwords"), pytest.mark.django_db(transaction=True)]

VARIANTS = [{"agent": "code-assistant"}, {"agent": "support-chat"}]
LONG_AGO = timedelta(minutes=10)


@pytest.fixture
def token(upstream, acme_key, acme_token) -> str:
    return acme_token[1]


def trials_of(experiment: Experiment, variant: Variant) -> list[Trial]:
    return list(
        Trial.objects.filter(variant=variant).select_related("run").order_by("case__position")
    )


def died_mid_thread(acme, token: str) -> Experiment:
    """A thread replay as a killed worker leaves it.

    Both variants really ran (against the simulator); then the state is set back to what a
    kill leaves: variant 1 finished turn 1 and was reading turn 2 (its run still `running`,
    its reader's heartbeat stale); variant 2 had started turn 1 without a run yet, so neither
    of its turns ran. The experiment is `running` with a stale heartbeat and no worker.
    """
    thread_id, _ = recorded_thread(token)
    spec = parse_spec({"source": {"thread": thread_id}, "variants": VARIANTS})
    experiment = create_experiment(acme, spec)
    asyncio.run(run_experiment(experiment.pk))
    first, second = experiment.variants.order_by("position")
    lost_turn = trials_of(experiment, first)[1]
    Run.objects.filter(pk=lost_turn.run_id).update(
        status="running", finished_at=None, heartbeat_at=timezone.now() - LONG_AGO
    )
    Trial.objects.filter(pk=lost_turn.pk).update(status="running")
    turns = trials_of(experiment, second)
    Trial.objects.filter(pk=turns[0].pk).update(status="running", run=None)
    Trial.objects.filter(pk=turns[1].pk).update(status="pending", run=None)
    Variant.objects.filter(pk=second.pk).update(upstream_thread_id="")
    Experiment.objects.filter(pk=experiment.pk).update(
        status="running", finished_at=None, heartbeat_at=timezone.now() - LONG_AGO
    )
    return experiment


def maintain_until_ended(experiment: Experiment, timeout: float = 20) -> Experiment:
    """The worker's maintenance thread, as rtdash/asgi.py starts it; no page or API read."""
    maintenance = Maintenance(lambda: (), interval=0.2)
    maintenance.start()
    try:
        deadline = time.monotonic() + timeout
        while Experiment.objects.get(pk=experiment.pk).status == "running":
            assert time.monotonic() < deadline, "the maintenance thread did not reap it"
            time.sleep(0.1)
    finally:
        maintenance.stopping.set()
        maintenance.join(timeout=15)
    return Experiment.objects.get(pk=experiment.pk)


def test_the_maintenance_thread_ends_a_dead_workers_experiment_without_a_read(acme, token):
    experiment = died_mid_thread(acme, token)
    ended = maintain_until_ended(experiment)
    assert ended.status == "failed" and "worker" in ended.error_message
    first, second = experiment.variants.order_by("position")
    done, lost = trials_of(experiment, first)
    assert done.status == "done" and done.run.status == "completed"
    # The run reaper ended the lost turn's run; the trial keeps it.
    assert lost.status == "done" and lost.run.status == "interrupted"
    assert [t.status for t in trials_of(experiment, second)] == ["skipped", "skipped"]
    assert {t.error_code for t in trials_of(experiment, second)} == {"worker_lost"}


def test_resume_reruns_only_what_did_not_finish_in_the_variants_own_threads(client, acme, token):
    experiment = died_mid_thread(acme, token)
    first, second = experiment.variants.order_by("position")
    kept = trials_of(experiment, first)[0]
    kept_run = Run.objects.get(pk=kept.run_id)
    old_second_thread = Run.objects.filter(source="experiment", agent="support-chat").values_list(
        "upstream_thread_id", flat=True
    )[0]
    lost_run_id = trials_of(experiment, first)[1].run_id
    maintain_until_ended(experiment)

    response = client.post(f"/api/experiments/{experiment.pk}/resume", HTTP_X_API_KEY=token)
    assert response.status_code == 202, response.content
    assert response.json()["data"] == {
        "id": experiment.pk,
        "status": "running",
        "url": f"/experiments/{experiment.pk}/",
    }
    resumed = wait_until_ended(experiment.pk)
    assert resumed.status == "completed" and resumed.error_message == ""
    assert resumed.finished_at is not None

    # Variant 1: turn 1 untouched; turn 2 asked again in the thread turn 1 ran in, after it.
    turn1, turn2 = trials_of(experiment, first)
    assert turn1.pk == kept.pk and turn1.run_id == kept_run.pk
    run1 = Run.objects.get(pk=kept_run.pk)
    assert (run1.status, run1.finished_at, run1.result) == (
        kept_run.status,
        kept_run.finished_at,
        kept_run.result,
    )
    assert turn2.run_id != lost_run_id and turn2.run.status == "completed"
    assert turn2.run.upstream_thread_id == run1.upstream_thread_id
    assert turn2.run.started_at > run1.finished_at
    assert Run.objects.get(pk=lost_run_id).status == "interrupted"  # still in the history

    # Variant 2 lost turn 1: both turns again, in order, in a fresh thread of its own.
    turn1, turn2 = trials_of(experiment, second)
    assert turn1.run.status == turn2.run.status == "completed"
    assert turn1.run.upstream_thread_id == turn2.run.upstream_thread_id
    assert turn1.run.upstream_thread_id not in {old_second_thread, run1.upstream_thread_id}
    assert turn2.run.started_at > turn1.run.finished_at
    assert turn2.run.prompt == "Go on"
    second.refresh_from_db()
    assert second.upstream_thread_id == turn1.run.upstream_thread_id

    # Nothing left to resume.
    again = client.post(f"/api/experiments/{experiment.pk}/resume", HTTP_X_API_KEY=token)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


def test_a_stopped_prompt_set_resumes_its_skipped_cases_from_the_page(client, bob, token):
    client.force_login(bob)
    response = client.post(
        reverse("experiment_new"), {"prompts": "one\ntwo\nthree", "variants": "agent=support-chat"}
    )
    experiment = Experiment.objects.latest("pk")
    assert response.status_code == 302
    wait_until_ended(experiment.pk)
    # As Stop after the first case leaves it.
    trials = list(Trial.objects.filter(variant__experiment=experiment).order_by("case__position"))
    kept_run_id = trials[0].run_id
    Trial.objects.filter(pk__in=[t.pk for t in trials[1:]]).update(
        status="skipped", run=None, error_code="cancelled", error_message="Stopped."
    )
    Experiment.objects.filter(pk=experiment.pk).update(status="cancelled", cancel_requested=True)

    page = client.get(reverse("experiment_detail", args=[experiment.pk])).content.decode()
    assert f'action="{reverse("experiment_resume", args=[experiment.pk])}"' in page
    assert "every case that did not complete" in page
    response = client.post(reverse("experiment_resume", args=[experiment.pk]))
    assert response.status_code == 302
    resumed = wait_until_ended(experiment.pk)
    assert resumed.status == "completed" and not resumed.cancel_requested
    trials = list(Trial.objects.filter(variant__experiment=experiment).order_by("case__position"))
    assert trials[0].run_id == kept_run_id
    assert [t.run.prompt for t in trials] == ["one", "two", "three"]
    assert {t.run.status for t in trials} == {"completed"}
    page = client.get(reverse("experiment_detail", args=[experiment.pk])).content.decode()
    assert "experiment_resume" not in page and "/resume/" not in page


def test_resume_is_refused_while_running_or_completed(client, acme, token):
    running = Experiment.objects.create(team=acme, name="x", source_kind="prompts")
    response = client.post(f"/api/experiments/{running.pk}/resume", HTTP_X_API_KEY=token)
    assert response.status_code == 409
    assert "running" in response.json()["error"]["message"]
    Experiment.objects.filter(pk=running.pk).update(status="completed")
    response = client.post(f"/api/experiments/{running.pk}/resume", HTTP_X_API_KEY=token)
    assert response.status_code == 409
    assert Experiment.objects.get(pk=running.pk).status == "completed"


def test_resume_tenancy_roles_and_methods(client, acme, charlie, victor, token, globex_token):
    experiment = Experiment.objects.create(
        team=acme, name="x", source_kind="prompts", status="failed"
    )
    url = reverse("experiment_resume", args=[experiment.pk])
    api = f"/api/experiments/{experiment.pk}/resume"
    assert client.post(url).status_code == 302  # anonymous: to the login page
    assert client.post(api).status_code == 401
    assert client.post(api, HTTP_X_API_KEY=globex_token[1]).status_code == 404
    assert client.get(api, HTTP_X_API_KEY=token).status_code == 405
    client.force_login(charlie)
    assert client.post(url).status_code == 404
    client.force_login(victor)  # a viewer
    assert client.post(url).status_code == 404
    assert client.post(api).status_code == 404
    assert client.get(url).status_code == 405
    assert Experiment.objects.get(pk=experiment.pk).status == "failed"
