"""Reports: the numbers reconcile exactly with the runs, and each page keeps to its team."""

from __future__ import annotations

import csv
import io
import math
import random
from collections import Counter, defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs.core.formatting import money_number
from runs.models import DailyRunStats, DailyUsage, Run, RunStatus, ThreadUsageSync
from runs.pipeline.recording import rebuild_usage
from runs.pipeline.stats import (
    GAMMA,
    MAX_BUCKET,
    Histogram,
    bucket_of,
    bucket_value,
    rebuild_run_stats,
    record_run_stats,
)
from runs.reports.queries import GROUPS, make_period, top_threads, usage_report
from tests.helpers import login
from tests.reporting import finished_run, set_price

pytestmark = pytest.mark.django_db

FAILED = (RunStatus.FAILED, RunStatus.INTERRUPTED)


@pytest.fixture
def history(acme, alice, bob, acme_token):
    """A varied month of acme runs through the recording path: every usage shape, status,
    person, token, agent, price, thread and day."""
    rng = random.Random(7)
    token = acme_token[0]
    now = timezone.now()
    # No team default: unpriced-agent has no price at all. deep-thinker's price changes.
    for agent in ("code-assistant", "support-chat", "deep-thinker"):
        set_price(acme, agent=agent, since=(now - timedelta(days=40)).date(),
                  input_per_million="3", output_per_million="15",
                  cached_input_per_million="0.3")  # fmt: skip
    set_price(acme, agent="deep-thinker", since=(now - timedelta(days=12)).date(),
              input_per_million="5", output_per_million="25",
              reasoning_per_million="50")  # fmt: skip
    statuses = ["completed"] * 8 + ["failed", "interrupted", "cancelled", "dispatched"]
    runs = []
    for index in range(120):
        agent = rng.choice(["code-assistant", "support-chat", "deep-thinker", "unpriced-agent"])
        usage = {"inputTokens": rng.randint(100, 9000), "outputTokens": rng.randint(10, 3000)}
        if rng.random() < 0.3:
            usage["cachedInputTokens"] = rng.randint(0, usage["inputTokens"])
        if agent == "deep-thinker":
            usage["reasoningTokens"] = rng.randint(50, 2000)
        if rng.random() < 0.1:
            usage.pop(rng.choice(["inputTokens", "outputTokens"]))
        if rng.random() < 0.05:
            usage = None
        source = rng.choice(["gateway", "playground"])
        runs.append(
            finished_run(
                acme,
                agent=agent,
                usage=usage,
                status=rng.choice(statuses),
                started_at=now - timedelta(days=rng.randint(0, 35), minutes=rng.randint(0, 600)),
                iterations=rng.choice([None, 1, 2, 4, 8]),
                config=rng.choice([{}, {"maxTurns": 4}, {"maxTurns": 8}]),
                user=rng.choice([alice, bob]) if source == "playground" else None,
                token=token if source == "gateway" else None,
                source=source,
                first_byte_ms=rng.randint(50, 3000),
                duration_ms=rng.randint(200, 120_000),
                thread_id=f"thr_{index % 17}_{agent}" if rng.random() < 0.6 else "",
            )
        )
    # Unpriced agent runs stay unpriced: not a single zero among them.
    assert {r.cost_status for r in runs if r.agent == "unpriced-agent"} == {"unpriced"}
    return runs


def _expected(runs, key):
    """The report numbers computed straight from the runs, the slow obvious way."""
    groups = defaultdict(lambda: Counter(cost=Decimal(0)))
    for run in runs:
        group = groups[key(run)]
        group["runs"] += 1
        group["completed"] += run.status == RunStatus.COMPLETED
        group["failed"] += run.status in FAILED
        group["input"] += run.input_tokens or 0
        group["output"] += run.output_tokens or 0
        group["cached"] += run.cached_input_tokens or 0
        group["reasoning"] += run.reasoning_tokens or 0
        group["cost"] += run.cost or 0
        group["unpriced"] += run.cost is None
        group["partial"] += run.cost_status == "partial"
        if run.iterations is not None:
            group["iterations_runs"] += 1
            group["iterations_sum"] += run.iterations
            if run.config.get("maxTurns"):
                group["turns"] += 1
                group["hit"] += run.iterations >= run.config["maxTurns"]
    return groups


KEYS = {
    "agent": lambda run: run.agent,
    "user": lambda run: "" if run.user_id is None else str(run.user_id),
    "token": lambda run: "" if run.token_id is None else str(run.token_id),
    "day": lambda run: run.started_at.date().isoformat(),
    "thread": lambda run: run.thread.upstream_id if run.thread_id else None,
}


def _assert_reconciles(acme, period, group_by):
    report = usage_report(acme, period, group_by)
    runs = [
        run
        for run in Run.objects.filter(team=acme).select_related("thread")
        if period.start <= run.started_at < period.end
    ]
    expected = _expected(runs, KEYS[group_by])
    expected.pop(None, None)  # runs outside any thread are not a thread group
    got = {row.key: row for row in report.rows}
    assert set(got) == set(expected)
    for key, row in got.items():
        want = expected[key]
        assert (row.runs, row.completed, row.failed) == (
            want["runs"], want["completed"], want["failed"]
        ), key  # fmt: skip
        assert (row.input_tokens, row.output_tokens) == (want["input"], want["output"])
        assert (row.cached_input_tokens, row.reasoning_tokens) == (
            want["cached"], want["reasoning"]
        )  # fmt: skip
        assert row.cost == want["cost"], key  # exact decimals, not approximately
        assert (row.unpriced_runs, row.partial_runs) == (want["unpriced"], want["partial"])
        assert (row.iterations_runs, row.iterations_sum) == (
            want["iterations_runs"], want["iterations_sum"]
        )  # fmt: skip
        assert (row.max_turns_runs, row.max_turns_hit) == (want["turns"], want["hit"])
    everything = _expected(runs, lambda run: "all")["all"]
    assert report.totals.runs == everything["runs"]
    assert report.totals.cost == everything["cost"]
    return report


@pytest.mark.parametrize("group_by", list(GROUPS))
def test_the_rollup_equals_the_sum_over_runs_for_every_grouping(acme, history, group_by):
    today = timezone.now().date()
    period = make_period("custom", (today - timedelta(days=40)).isoformat(), today.isoformat())
    _assert_reconciles(acme, period, group_by)


USAGE_ROW = (
    "day", "dimensions", "runs", "completed", "failed", "input_tokens", "output_tokens",
    "cached_input_tokens", "reasoning_tokens", "cost", "unpriced_runs", "duration_ms",
)  # fmt: skip
STATS_ROW = (
    "day", "dimensions", "runs", "partial_runs", "iterations_runs", "iterations_sum",
    "max_turns_runs", "max_turns_hit", "duration_buckets", "first_byte_buckets",
)  # fmt: skip


def _rows(model, team, columns):
    return sorted(model.objects.filter(team=team).values_list(*columns), key=str)


@pytest.mark.parametrize("group_by", list(GROUPS))
def test_it_still_reconciles_after_rebuilding_the_rollups(acme, history, group_by):
    usage_before = _rows(DailyUsage, acme, USAGE_ROW)
    # The statistics as the per-run update writes them, one finished run at a time.
    DailyRunStats.objects.filter(team=acme).delete()
    for run in Run.objects.filter(team=acme):
        record_run_stats(run)
    stats_before = _rows(DailyRunStats, acme, STATS_ROW)
    call_command("rebuild_usage", stdout=io.StringIO())
    # The per-run updates and the rebuild from the runs agree row for row.
    assert _rows(DailyUsage, acme, USAGE_ROW) == usage_before
    assert _rows(DailyRunStats, acme, STATS_ROW) == stats_before
    today = timezone.now().date()
    _assert_reconciles(
        acme,
        make_period("custom", (today - timedelta(days=60)).isoformat(), today.isoformat()),
        group_by,
    )


def test_periods_only_count_their_days(acme, history):
    week = make_period("7d")
    report = _assert_reconciles(acme, week, "day")
    assert all(week.since.isoformat() <= row.key <= week.until.isoformat() for row in report.rows)


def test_stale_statistics_are_rebuilt_from_the_runs(acme, history):
    DailyRunStats.objects.filter(team=acme).delete()
    today = timezone.now().date()
    period = make_period("custom", (today - timedelta(days=40)).isoformat(), today.isoformat())
    report = _assert_reconciles(acme, period, "agent")
    assert report.totals.duration_p50_ms is not None
    assert DailyRunStats.objects.filter(team=acme).exists()


def test_rebuild_usage_only_since_a_day_keeps_earlier_rows(acme, history):
    today = timezone.now().date()
    cutoff = today - timedelta(days=10)
    earlier = DailyUsage.objects.filter(team=acme, day__lt=cutoff).count()
    DailyUsage.objects.filter(team=acme, day__gte=cutoff).delete()
    out = io.StringIO()
    call_command("rebuild_usage", "--since", cutoff.isoformat(), stdout=out)
    assert "Rebuilt the rollups since" in out.getvalue()
    assert DailyUsage.objects.filter(team=acme, day__lt=cutoff).count() == earlier
    period = make_period("custom", (today - timedelta(days=60)).isoformat(), today.isoformat())
    _assert_reconciles(acme, period, "day")


# --- Percentiles ------------------------------------------------------------------------------


def test_histogram_buckets_stay_within_two_and_a_half_percent():
    for value in (1, 2, 7, 99, 100, 101, 999, 1234, 40_000, 1_800_000):
        estimate = bucket_value(bucket_of(value))
        assert abs(estimate - value) / value <= GAMMA**0.5 - 1 + 1e-9


def test_many_stored_histograms_add_up_as_one_at_a_time():
    rng = random.Random(3)
    stored = []
    for _ in range(50):
        histogram = Histogram()
        for _ in range(rng.randint(0, 40)):
            histogram.add(bucket_of(rng.choice([0.5, rng.uniform(1, 10**7)])))
        stored.append(histogram.text())
    assert "" in stored  # an empty histogram among them
    one_by_one, at_once = Histogram(), Histogram()
    for text in stored:
        one_by_one.add_text(text)
    at_once.add_texts(stored)
    assert at_once.counts == one_by_one.counts
    assert at_once.total == sum(Histogram.of(text).total for text in stored)
    nothing = Histogram()
    nothing.add_texts([])
    nothing.add_texts(["", ""])
    assert nothing.total == 0


def test_one_more_count_in_a_stored_histogram_is_what_the_histogram_makes():
    rng = random.Random(5)
    for _ in range(300):
        histogram = Histogram()
        for _ in range(rng.randint(0, 6)):
            histogram.add(rng.randint(0, 300))
        stored = histogram.text()
        # Below, inside and above the stored range, past the last bucket, or none at all.
        bucket = rng.choice([rng.randint(0, 400), MAX_BUCKET + 7, None])
        expected = Histogram.of(stored)
        if bucket is not None:
            expected.add(bucket)
        assert Histogram.with_one_more(stored, bucket) == expected.text()


def test_report_percentiles_match_the_exact_ones_within_the_bound(acme, history):
    period = make_period("30d")
    report = usage_report(acme, period, "agent")
    for row in report.rows:
        runs = Run.objects.filter(
            team=acme, agent=row.key, started_at__gte=period.start, started_at__lt=period.end
        )
        durations = sorted(runs.values_list("duration_ms", flat=True))
        exact_p50 = durations[max(1, math.ceil(0.5 * len(durations))) - 1]
        exact_p95 = durations[max(1, math.ceil(0.95 * len(durations))) - 1]
        bound = GAMMA**0.5 - 1 + 1e-9
        assert abs(row.duration_p50_ms - exact_p50) <= bound * max(exact_p50, 1)
        assert abs(row.duration_p95_ms - exact_p95) <= bound * max(exact_p95, 1)


def test_the_thread_report_has_exact_percentiles(acme, history):
    report = usage_report(acme, make_period("30d"), "thread")
    assert report.exact_percentiles
    for row in report.rows:
        durations = Run.objects.filter(team=acme, thread__upstream_id=row.key).values_list(
            "duration_ms", flat=True
        )
        assert row.duration_p95_ms in {float(d) for d in durations}


def test_rebuilding_the_statistics_counts_every_finished_run(acme, history):
    assert rebuild_run_stats(acme) == rebuild_usage(acme) == len(history)


# --- The page ---------------------------------------------------------------------------------


def test_it_shows_the_report_with_charts_and_a_table(client, alice, history):
    response = login(client, alice).get("/reports?period=30d&group_by=agent")
    assert response.status_code == 200
    body = response.content.decode()
    assert body.count("<svg") == 2
    assert 'data-chart="spend-over-time"' in body and 'data-chart="spend-by-group"' in body
    assert "<table" in body and "code-assistant" in body
    # The unpriced agent's cost is "unpriced", never $0.00.
    row = body[body.index(">unpriced-agent<") :].split("</tr>")[0]
    assert "unpriced" in row and "$0.00" not in row


@pytest.mark.parametrize("group_by", list(GROUPS))
@pytest.mark.parametrize("period", ["7d", "30d", "month"])
def test_every_period_and_grouping_renders(client, bob, history, period, group_by):
    response = login(client, bob).get(f"/reports?period={period}&group_by={group_by}")
    assert response.status_code == 200


def test_a_custom_period(client, victor, history):
    response = login(client, victor).get("/reports?period=custom&since=2026-01-01&until=2026-01-31")
    assert response.status_code == 200
    assert "2026-01-01 to 2026-01-31" in response.content.decode()


@pytest.mark.parametrize(
    "query",
    [
        "period=custom&since=yesterday",
        "period=custom&since=2026-02-01&until=2026-01-01",
        "period=fortnight",
        "group_by=planet",
        "period=custom&since=2020-01-01&until=2026-01-01",
    ],
)
def test_it_rejects_a_bad_query_clearly(client, alice, query):
    response = login(client, alice).get(f"/reports?{query}")
    assert response.status_code == 400
    assert 'class="notice error"' in response.content.decode()


def test_htmx_gets_only_the_report(client, alice, history):
    response = login(client, alice).get("/reports?period=7d", headers={"HX-Request": "true"})
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="report">') and "<html" not in body


def test_it_requires_login(client, acme):
    response = client.get("/reports")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_it_rejects_post(client, alice):
    assert login(client, alice).post("/reports").status_code == 405


def test_an_outsider_sees_only_their_own_team(client, charlie, history, globex):
    finished_run(globex, agent="globex-agent", usage={"inputTokens": 5, "outputTokens": 5})
    body = login(client, charlie).get("/reports?period=30d").content.decode()
    assert "globex-agent" in body
    assert "code-assistant" not in body and "unpriced-agent" not in body


# --- CSV --------------------------------------------------------------------------------------


def test_the_csv_has_the_same_numbers(client, alice, acme, history):
    response = login(client, alice).get("/reports/export.csv?period=30d&group_by=agent")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    report = usage_report(acme, make_period("30d"), "agent")
    assert [r["key"] for r in rows[:-1]] == [row.key for row in report.rows]
    for line, row in zip(rows, report.rows, strict=False):
        assert int(line["runs"]) == row.runs
        # Rounded as the page shows it (runs.core.formatting.money, without the sign).
        assert line["cost"] == ("" if row.fully_unpriced else money_number(row.cost))
    assert rows[-1]["label"] == "TOTAL" and int(rows[-1]["runs"]) == report.totals.runs
    unpriced = next(line for line in rows if line["key"] == "unpriced-agent")
    assert unpriced["cost"] == ""  # unknown, not 0


def test_csv_cells_cannot_be_formulas(client, alice, acme):
    set_price(acme)
    finished_run(acme, agent="=HYPERLINK(1)", usage={"inputTokens": 1, "outputTokens": 1})
    body = login(client, alice).get("/reports/export.csv?period=7d").content.decode()
    assert "'=HYPERLINK(1)" in body


@pytest.mark.parametrize("group_by", list(GROUPS))
def test_any_report_exports(client, bob, history, group_by):
    response = login(client, bob).get(f"/reports/export.csv?period=month&group_by={group_by}")
    assert response.status_code == 200


def test_the_export_requires_login(client, acme):
    assert client.get("/reports/export.csv").status_code == 302


def test_the_export_rejects_post(client, alice):
    assert login(client, alice).post("/reports/export.csv").status_code == 405


def test_the_export_of_an_outsider_has_no_acme_rows(client, charlie, history):
    body = login(client, charlie).get("/reports/export.csv?period=30d").content.decode()
    assert "code-assistant" not in body and "unpriced-agent" not in body


@pytest.mark.parametrize("limit", [1, 3, 8, 500])
@pytest.mark.parametrize("days_ago", [(6, 0), (29, 0), (20, 10), (33, 33)])
def test_top_threads_are_exactly_the_costliest_in_the_period(acme, history, limit, days_ago):
    today = timezone.now().date()
    since, until = (today - timedelta(days=d) for d in days_ago)
    period = make_period("custom", since.isoformat(), until.isoformat())
    in_period: dict[int, Decimal] = defaultdict(Decimal)
    for run in Run.objects.filter(team=acme, thread__isnull=False):
        if period.start <= run.started_at < period.end:
            in_period[run.thread_id] += run.cost or 0
    ranked, more = top_threads(acme, period, limit)
    assert all(in_period[pk] == cost for pk, cost in ranked)
    assert [cost for _pk, cost in ranked] == sorted(in_period.values(), reverse=True)[:limit]
    if len(in_period) > limit:
        assert more  # the page then says only the costliest are shown


def test_thread_totals_follow_new_runs_without_a_rebuild(acme, history):
    period = make_period("30d")
    before = dict(top_threads(acme, period, 500)[0])
    thread = Run.objects.filter(team=acme, thread__isnull=False).latest("started_at").thread
    extra = finished_run(acme, agent=thread.agent, usage={"inputTokens": 10**6, "outputTokens": 0},
                         thread_id=thread.upstream_id)  # fmt: skip
    after = dict(top_threads(acme, period, 500)[0])
    assert after[thread.pk] == before.get(thread.pk, 0) + extra.cost


def test_reading_thread_totals_while_nothing_happens_writes_nothing(acme, history):
    period = make_period("30d")
    top_threads(acme, period, 10)
    synced = ThreadUsageSync.objects.get(team=acme).synced_at
    with CaptureQueriesContext(connection) as queries:
        top_threads(acme, period, 10)
    assert not [q for q in queries if q["sql"].startswith(("UPDATE", "INSERT", "DELETE"))]
    assert ThreadUsageSync.objects.get(team=acme).synced_at == synced
    # A thread active after a quiet spell is still brought up to date.
    thread = Run.objects.filter(team=acme, thread__isnull=False).latest("started_at").thread
    before = dict(top_threads(acme, period, 500)[0])
    extra = finished_run(acme, agent=thread.agent, usage={"inputTokens": 10**6, "outputTokens": 0},
                         thread_id=thread.upstream_id)  # fmt: skip
    after = dict(top_threads(acme, period, 500)[0])
    assert after[thread.pk] == before.get(thread.pk, 0) + extra.cost


def test_charts_escape_what_users_named(client, alice, acme):
    set_price(acme)
    finished_run(
        acme, agent="<script>alert(1)</script>", usage={"inputTokens": 9, "outputTokens": 9}
    )
    body = login(client, alice).get("/reports?period=7d").content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
