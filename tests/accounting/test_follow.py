"""Following runs that answered registered/dispatched to their end, against the real simulator."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import connection, connections
from django.utils import timezone

from runs.gateway.views import settle
from runs.models import DailyRunStats, DailyUsage, Run
from runs.pipeline.budgets import month_spend
from runs.pipeline.follow import follow_due_runs
from runs.pipeline.recording import rebuild_usage
from runs.pipeline.stats import rebuild_run_stats
from tests.reporting import set_price

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"agent": "support-chat", "prompt": "My invoice is wrong", "stream": False}


@pytest.fixture(autouse=True)
def _follow_at_once(settings):
    settings.RTDASH_FOLLOW_FIRST_DELAY = 0


async def pending_run(gateway, lookups: int = 1, status: str = "registered") -> Run:
    simulate = {"runStatus": status, "pendingLookups": lookups}
    response = await gateway("POST", "/v1/run", {**BODY, "metadata": {"simulate": simulate}})
    assert response.json()["data"]["status"] == status
    await settle()
    return await Run.objects.alatest("pk")


def rollup_rows(team):
    fields = ["day", "dimensions", "runs", "completed", "failed", "input_tokens"]
    fields += ["output_tokens", "cached_input_tokens", "reasoning_tokens", "cost"]
    fields += ["unpriced_runs", "duration_ms"]
    return sorted(DailyUsage.objects.filter(team=team).values_list(*fields))


def stats_rows(team):
    fields = ["day", "dimensions", "runs", "partial_runs", "iterations_runs", "iterations_sum"]
    fields += ["duration_buckets", "first_byte_buckets"]
    return sorted(DailyRunStats.objects.filter(team=team).values_list(*fields))


def rebuilt(team):
    """The rollups as a rebuild from the runs makes them: what counting once means."""
    incremental = (rollup_rows(team), stats_rows(team))
    rebuild_usage(team)
    rebuild_run_stats(team)
    return incremental, (rollup_rows(team), stats_rows(team))


@pytest.mark.parametrize("status", ["registered", "dispatched"])
async def test_a_pending_run_is_followed_to_completed_and_counted_once(gateway, acme, status):
    await sync_to_async(set_price)(acme, since=timezone.now().date() - timedelta(days=1))
    run = await pending_run(gateway, lookups=1, status=status)
    assert run.follow_next_at is not None
    assert run.output_tokens is None and run.cost_status == "partial"
    assert await sync_to_async(month_spend)(acme) == (run.cost, 0)

    first = await sync_to_async(follow_due_runs)()
    assert first.waiting == [run.pk]  # the simulator still says running
    second = await sync_to_async(follow_due_runs)()
    assert second.finished == [run.pk]

    run = await Run.objects.aget(pk=run.pk)
    assert run.status == "completed" and run.follow_next_at is None
    assert run.output_tokens > 0 and run.input_tokens > 0 and run.result
    assert run.cost_status == "computed" and run.cost > 0
    rows = await sync_to_async(rollup_rows)(acme)
    assert [(r[2], r[3], r[4], r[5], r[6]) for r in rows] == [
        (1, 1, 0, run.input_tokens, run.output_tokens)
    ]
    assert await sync_to_async(month_spend)(acme) == (run.cost, 0)  # the budget's figure
    incremental, from_runs = await sync_to_async(rebuilt)(acme)
    assert incremental == from_runs
    # Nothing more to follow: a later round finds nothing and changes nothing.
    third = await sync_to_async(follow_due_runs)()
    assert (third.finished, third.waiting) == ([], [])
    assert await sync_to_async(rollup_rows)(acme) == rows


async def test_a_run_upstream_does_not_know_is_marked_unfollowable_not_zero(gateway, acme):
    await sync_to_async(set_price)(acme, since=timezone.now().date() - timedelta(days=1))
    run = await pending_run(gateway)
    await Run.objects.filter(pk=run.pk).aupdate(upstream_run_id="run_nobody_knows")
    before = await sync_to_async(rollup_rows)(acme)
    done = await sync_to_async(follow_due_runs)()
    assert done.unfollowable == [run.pk]
    run = await Run.objects.aget(pk=run.pk)
    assert run.error_code == "unfollowable" and "404" in run.error_message
    assert run.status == "registered" and run.follow_next_at is None
    assert run.cost_status == "partial"  # a lower bound, never a priced $0
    assert await sync_to_async(rollup_rows)(acme) == before


async def test_a_run_too_old_is_given_up(gateway, acme, settings):
    run = await pending_run(gateway)
    old = timezone.now() - timedelta(seconds=settings.RTDASH_FOLLOW_MAX_AGE_SECONDS + 60)
    await Run.objects.filter(pk=run.pk).aupdate(started_at=old)
    done = await sync_to_async(follow_due_runs)()
    assert done.unfollowable == [run.pk]
    run = await Run.objects.aget(pk=run.pk)
    assert run.error_code == "unfollowable" and "older" in run.error_message
    assert run.cost_status == "unpriced" and run.cost is None


async def test_it_gives_up_after_the_most_lookups(gateway, acme, settings):
    settings.RTDASH_FOLLOW_MAX_ATTEMPTS = 2
    run = await pending_run(gateway, lookups=10)
    rounds = [await sync_to_async(follow_due_runs)() for _ in range(3)]
    assert [r.waiting for r in rounds[:1]] == [[run.pk]]
    assert rounds[1].unfollowable == [run.pk]
    assert rounds[2].unfollowable == rounds[2].waiting == []


async def test_backoff_waits_before_the_next_lookup(gateway, settings):
    settings.RTDASH_FOLLOW_FIRST_DELAY = 30
    run = await pending_run(gateway)
    assert (await sync_to_async(follow_due_runs)()).waiting == []  # not due yet
    later = timezone.now() + timedelta(seconds=31)
    assert (await sync_to_async(follow_due_runs)(now=later)).waiting == [run.pk]
    run = await Run.objects.aget(pk=run.pk)
    assert run.follow_next_at >= later + timedelta(seconds=29)


async def test_the_command_follows_runs(gateway, acme):
    import io

    run = await pending_run(gateway, lookups=0)
    out = io.StringIO()
    await sync_to_async(call_command)("follow_runs", stdout=out)
    assert "Finished 1 run(s)" in out.getvalue()
    assert (await Run.objects.aget(pk=run.pk)).status == "completed"


async def test_two_workers_do_not_both_follow_a_run(gateway, acme):
    if connection.vendor != "postgresql":
        pytest.skip("the lease is about concurrent workers on PostgreSQL")
    run = await pending_run(gateway, lookups=0)
    start = threading.Barrier(2)
    rounds = []

    def worker():
        try:
            start.wait()
            rounds.append(follow_due_runs())
        finally:
            connections.close_all()

    def both():
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    await sync_to_async(both)()
    assert sorted(run_id for r in rounds for run_id in r.finished) == [run.pk]
    rows = await sync_to_async(rollup_rows)(acme)
    assert [(r[2], r[3]) for r in rows] == [(1, 1)]


async def test_a_cut_off_run_keeps_what_its_client_saw_and_gains_the_lookups_usage(
    gateway,
    acme,
):
    """The simulator records a cut stream as failed without usage, so the lookup that has
    the usage comes from a MockTransport (the only run lookup this test needs)."""
    import httpx

    from runs.core import upstream
    from tests.helpers import stream_body

    body = {"agent": "support-chat", "prompt": "Say hi", "metadata": {"simulate": {"cutAfter": 3}}}
    await stream_body(await gateway("POST", "/v1/run", body))
    await settle()
    run = await Run.objects.alatest("pk")
    assert run.error_code == "upstream_disconnected" and run.output_tokens is None
    assert run.upstream_run_id and run.follow_next_at is not None
    usage = {"inputTokens": 120, "outputTokens": 45, "totalTokens": 165}
    looked_up = []

    def lookup(request: httpx.Request) -> httpx.Response:
        looked_up.append(request.url.path)
        data = {"id": run.upstream_run_id, "status": "completed", "output": "Hi!",
                "tokensUsed": usage}  # fmt: skip
        return httpx.Response(200, json={"data": data})

    upstream.use_transport(httpx.MockTransport(lookup))
    try:
        done = await sync_to_async(follow_due_runs)()
    finally:
        upstream.use_transport(None)
    assert done.finished == [run.pk]
    assert looked_up == [f"/v1/run/{run.upstream_run_id}"]
    run = await Run.objects.aget(pk=run.pk)
    assert run.status == "interrupted" and run.error_code == "upstream_disconnected"
    assert "run lookup" in run.error_message
    assert (run.input_tokens, run.output_tokens) == (120, 45)
    incremental, from_runs = await sync_to_async(rebuilt)(acme)
    assert incremental == from_runs
    assert [(r[2], r[4], r[5], r[6]) for r in incremental[0]] == [(1, 1, 120, 45)]


async def test_the_workers_maintenance_thread_follows_runs(gateway, acme):
    import asyncio

    from runs.pipeline.reaper import Maintenance

    class ClosingMaintenance(Maintenance):
        def run(self) -> None:
            try:
                super().run()
            finally:
                connections.close_all()  # PostgreSQL cannot drop a database still in use

    run = await pending_run(gateway, lookups=0)
    maintenance = ClosingMaintenance(lambda: (), interval=30)
    maintenance.start()  # its first round reaps and follows at once
    try:
        for _ in range(100):
            run = await Run.objects.aget(pk=run.pk)
            if run.status == "completed":
                break
            await asyncio.sleep(0.1)
    finally:
        maintenance.stopping.set()
        await sync_to_async(maintenance.join)(15)
    assert run.status == "completed" and run.output_tokens > 0
