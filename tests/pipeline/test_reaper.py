"""Runs whose reader died are ended `interrupted` with what was stored; live ones are left."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from runs.models import DailyUsage, Run, RunEvent, Thread
from runs.pipeline.reaper import Maintenance, reap_stale_runs, stamp_heartbeats
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.live import RtdashServer

pytestmark = pytest.mark.django_db(transaction=True)


def _running_run(team, *, heartbeat_age: float, frames=()) -> Run:
    now = timezone.now()
    run = Run.objects.create(
        team=team,
        source="gateway",
        agent="support-chat",
        prompt="hi",
        started_at=now - timedelta(seconds=heartbeat_age + 5),
        heartbeat_at=now - timedelta(seconds=heartbeat_age),
        reader="elsewhere:1",
    )
    for sequence, (event, data) in enumerate(frames, 1):
        RunEvent.objects.create(run=run, sequence=sequence, event=event, data=json.dumps(data))
    return run


def test_it_ends_a_run_whose_reader_is_gone_keeping_frames_and_usage(acme):
    usage = {"inputTokens": 120, "outputTokens": 7}
    run = _running_run(
        acme,
        heartbeat_age=120,
        frames=[
            ("run_started", {"type": "run_started", "runId": "run_1", "threadId": "thr_1"}),
            ("assistant_message_delta", {"type": "assistant_message_delta", "delta": "Hel"}),
            ("x_progress", {"type": "x_progress", "usage": usage}),
        ],
    )
    assert reap_stale_runs(60) == [run.pk]
    run.refresh_from_db()
    assert run.status == "interrupted"
    assert run.error_code == "reader_lost"
    assert (run.input_tokens, run.output_tokens) == (120, 7)
    assert run.frame_count == 3
    assert run.events.count() == 3
    assert run.finished_at is not None
    assert DailyUsage.objects.get(team=acme).failed == 1


def test_a_reaped_run_that_streamed_is_a_turn_of_its_thread_and_one_that_did_not_is_none(acme):
    streamed = _running_run(acme, heartbeat_age=120, frames=[("run_started", {"runId": "r"})])
    never_answered = _running_run(acme, heartbeat_age=120)
    Run.objects.filter(pk=streamed.pk).update(upstream_thread_id="thr_streamed")
    Run.objects.filter(pk=never_answered.pk).update(upstream_thread_id="thr_silent")
    assert sorted(reap_stale_runs(60)) == sorted([streamed.pk, never_answered.pk])
    # Frames come only from a stream RunTools answered 200: that run was taken.
    thread = Thread.objects.get(upstream_id="thr_streamed")
    assert thread.turns == 1
    assert Run.objects.get(pk=streamed.pk).thread_id == thread.pk
    assert Run.objects.get(pk=streamed.pk).http_status == 200
    assert not Thread.objects.filter(upstream_id="thr_silent").exists()
    assert Run.objects.get(pk=never_answered.pk).http_status is None


def test_it_leaves_runs_with_a_fresh_heartbeat(acme):
    run = _running_run(acme, heartbeat_age=5)
    assert reap_stale_runs(60) == []
    run.refresh_from_db()
    assert run.status == "running"


def test_a_heartbeat_keeps_a_run_alive(acme):
    run = _running_run(acme, heartbeat_age=120)
    stamp_heartbeats([run.pk])
    assert reap_stale_runs(60) == []


def test_reaping_twice_counts_once(acme):
    run = _running_run(acme, heartbeat_age=120)
    reap_stale_runs(60)
    reap_stale_runs(0)
    assert DailyUsage.objects.get(team=acme).runs == 1
    assert Run.objects.get(pk=run.pk).status == "interrupted"


def test_the_command_reports_what_it_ended(acme, capsys):
    _running_run(acme, heartbeat_age=120)
    call_command("reap_runs", "--stale-after", "60")
    assert "Ended 1 run(s) as interrupted." in capsys.readouterr().out


@pytest.mark.usefixtures("acme_key")
def test_killing_the_worker_mid_stream_leaves_no_run_running(upstream, acme_token):
    _token, plaintext = acme_token
    slow = {
        "agent": "slow-poke",
        "prompt": "Take your time",
        "metadata": {"simulate": {"dripMs": 100}},
    }
    server = RtdashServer(upstream.url, TEST_ENCRYPTION_KEY).start()
    try:
        seen = threading.Event()

        def read_until_killed():
            try:
                with httpx.stream(
                    "POST", server.url + "/v1/run", json=slow, headers={"X-API-Key": plaintext}
                ) as response:
                    for _chunk in response.iter_raw():
                        seen.set()
            except httpx.HTTPError:
                pass  # the server died under us, as intended

        client = threading.Thread(target=read_until_killed)
        client.start()
        assert seen.wait(10)
        deadline = time.monotonic() + 10
        while not RunEvent.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()
        client.join(10)
    finally:
        server.stop()

    run = Run.objects.get()
    assert run.status == "running"  # nobody finished it: the worker is dead
    stored = run.events.count()
    assert stored > 0
    time.sleep(0.2)
    assert reap_stale_runs(0.1) == [run.pk]
    run.refresh_from_db()
    assert run.status == "interrupted"
    assert run.events.count() == stored
    assert run.frame_count == stored


@pytest.mark.django_db(transaction=True)
def test_a_maintenance_round_hands_its_connection_back():
    # Between rounds the thread sleeps; on PostgreSQL its connection would hold a pool slot.
    maintenance = Maintenance(lambda: (), interval=60)
    held_after_round = []

    def one_round_in_a_thread() -> None:
        maintenance.one_round()
        held_after_round.append(connection.connection is not None)

    thread = threading.Thread(target=one_round_in_a_thread)
    thread.start()
    thread.join()
    assert held_after_round == [False]
