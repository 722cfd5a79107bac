"""manage.py prune_events and seed_history."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count, Sum
from django.urls import reverse
from django.utils import timezone

from runs.models import DailyUsage, GatewayToken, Run, RunEvent, Thread
from tests.helpers import make_run

pytestmark = pytest.mark.usefixtures("fast_passwords")


def _call(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- prune_events -------------------------------------------------------------------------


@pytest.fixture
def aged(acme):
    """Runs of several ages, each with three stored frames."""
    now = timezone.now()
    runs = {
        "old": make_run(acme, started_at=now - timedelta(days=100), frame_count=3),
        "older": make_run(acme, started_at=now - timedelta(days=400), frame_count=3),
        "recent": make_run(acme, started_at=now - timedelta(days=10), frame_count=3),
        "old_running": make_run(
            acme, started_at=now - timedelta(days=100), status="running", frame_count=3
        ),
    }
    for run in runs.values():
        RunEvent.objects.bulk_create(
            RunEvent(run=run, sequence=n, event="assistant_message_delta", data="{}")
            for n in range(1, 4)
        )
    return runs


def test_a_dry_run_says_what_would_go_and_deletes_nothing(aged):
    out = _call("prune_events", "--older-than", "90d", "--dry-run")
    assert "Would delete 6 frames of 2 runs" in out
    assert RunEvent.objects.count() == 12


def test_it_drops_old_frames_and_keeps_runs_and_usage(aged):
    before = {name: Run.objects.get(pk=run.pk) for name, run in aged.items()}
    out = _call("prune_events", "--older-than", "90d")
    assert "Deleted 6 frames of 2 runs" in out
    remaining = set(RunEvent.objects.values_list("run_id", flat=True))
    assert remaining == {aged["recent"].pk, aged["old_running"].pk}
    for name, run in before.items():
        after = Run.objects.get(pk=run.pk)
        assert (after.prompt, after.result, after.input_tokens, after.output_tokens) == (
            run.prompt,
            run.result,
            run.input_tokens,
            run.output_tokens,
        ), name
        assert after.frame_count == 3
    # Running it again finds nothing more.
    assert "Deleted 0 frames of 0 runs" in _call("prune_events", "--older-than", "90d")


def test_other_units_work(aged):
    assert "Would delete 6 frames of 2 runs" in _call(
        "prune_events", "--older-than", "2w", "--dry-run"
    )
    assert "Would delete 9 frames of 3 runs" in _call(
        "prune_events", "--older-than", "24h", "--dry-run"
    )


@pytest.mark.parametrize("age", ["90", "ninety days", "0d", "-5d", "3m"])
def test_a_bad_age_is_refused(db, age):
    with pytest.raises(CommandError, match="older-than"):
        call_command("prune_events", "--older-than", age, stdout=io.StringIO())


# --- seed_history -------------------------------------------------------------------------


def test_it_seeds_synthetic_history_that_adds_up(acme, alice, bob, acme_token):
    out = _call("seed_history", "--runs", "1200", "--team", "acme", "--batch", "500")
    assert "Wrote 1200 synthetic runs" in out
    runs = Run.objects.filter(team=acme)
    assert runs.count() == 1200
    assert not runs.filter(synthetic=False).exists()
    # Spread over the last 90 days, newest id newest run.
    now = timezone.now()
    oldest = runs.order_by("started_at").first().started_at
    assert now - timedelta(days=91) < oldest < now - timedelta(days=88)
    ordered = list(runs.order_by("started_at", "pk").values_list("pk", flat=True))
    assert ordered == sorted(ordered)
    # A realistic mix.
    statuses = dict(runs.values_list("status").annotate(n=Count("pk")))
    assert statuses["completed"] > 900 and statuses.get("failed", 0) > 20
    assert set(runs.values_list("agent", flat=True)) == {
        "code-assistant",
        "support-chat",
        "deep-thinker",
        "slow-poke",
    }
    assert runs.filter(user=alice).exists() and runs.filter(user=bob).exists()
    assert runs.filter(token=acme_token[0]).exists()
    assert not runs.filter(status="completed", input_tokens__isnull=True).exists()
    assert not runs.filter(cost=0).exists()  # no price: cost is None, never 0
    # Threads agree with their runs.
    threads = Thread.objects.filter(team=acme)
    assert threads.filter(turns__gt=1).exists()
    for thread in threads.filter(turns__gt=1)[:50]:
        own = runs.filter(thread=thread)
        assert own.count() == thread.turns
        assert set(own.values_list("upstream_thread_id", flat=True)) == {thread.upstream_id}
        assert own.aggregate(n=Sum("input_tokens"))["n"] == thread.input_tokens
    assert (
        not runs.filter(thread__isnull=False)
        .exclude(upstream_thread_id__in=threads.values("upstream_id"))
        .exists()
    )
    # The rollup matches the runs.
    rollup = DailyUsage.objects.filter(team=acme).aggregate(
        runs=Sum("runs"), tokens=Sum("input_tokens")
    )
    assert rollup == {"runs": 1200, "tokens": runs.aggregate(n=Sum("input_tokens"))["n"]}


def test_seeding_twice_adds_and_never_collides(acme):
    _call("seed_history", "--runs", "300", "--team", "acme")
    _call("seed_history", "--runs", "300", "--team", "acme")
    assert Run.objects.filter(team=acme).count() == 600
    assert DailyUsage.objects.filter(team=acme).aggregate(n=Sum("runs"))["n"] == 600


def test_it_creates_a_missing_team_with_tokens_for_its_runs(db):
    out = _call("seed_history", "--runs", "50", "--team", "bench")
    assert "Created team bench." in out
    assert GatewayToken.objects.filter(team__slug="bench").count() == 3
    assert Run.objects.filter(team__slug="bench", source="gateway").count() == 50


def test_it_refuses_nonsense(db):
    with pytest.raises(CommandError):
        call_command("seed_history", "--runs", "0", stdout=io.StringIO())


def test_seeded_runs_show_as_synthetic(client, acme, alice):
    _call("seed_history", "--runs", "20", "--team", "acme")
    client.force_login(alice)
    html = client.get(reverse("run_list")).content.decode()
    assert html.count("badge synthetic") == 20
