"""Days in the team's time zone: rollups, reports, `/api/usage`, budgets and prices count a run
on the date it started where the team is, across daylight-saving changes in both directions.

Runs go through the real finish path (tests.reporting.finished_run); the expected numbers are
worked out here from the runs themselves with zoneinfo, never from rtdash's own day logic.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from runs.models import DailyRunStats, DailyUsage, Run, Team
from runs.pipeline.budgets import budget_statuses, month_start
from runs.pipeline.recording import rebuild_usage
from runs.pipeline.stats import rebuild_run_stats
from runs.reports.overview import overview
from runs.reports.queries import Period, make_period, usage_report
from tests.helpers import login, make_run, shown_run_ids
from tests.reporting import finished_run, set_price

LOS_ANGELES = ZoneInfo("America/Los_Angeles")
BERLIN = ZoneInfo("Europe/Berlin")
USAGE = {"inputTokens": 1_000_000, "outputTokens": 0}  # $3 at the test price


def at(zone: ZoneInfo, *parts: int, fold: int = 0) -> datetime:
    """A local wall-clock time in `zone`, as the UTC instant rtdash stores."""
    return datetime(*parts, tzinfo=zone, fold=fold).astimezone(UTC)


# Runs just before and after local midnight around each change, and inside the hour that is
# skipped or repeated. Each is (instant, input tokens): distinct token counts make a run that
# lands on the wrong day show in the sums.
EDGES = {
    # 2026-03-08: 02:00 PST becomes 03:00 PDT; the local day has 23 hours.
    "los-angeles-spring": (
        LOS_ANGELES,
        [
            at(LOS_ANGELES, 2026, 3, 7, 23, 59, 59),
            at(LOS_ANGELES, 2026, 3, 8, 0, 0, 0),
            at(LOS_ANGELES, 2026, 3, 8, 1, 59, 59),
            at(LOS_ANGELES, 2026, 3, 8, 3, 0, 0),
            at(LOS_ANGELES, 2026, 3, 8, 23, 59, 59),
            at(LOS_ANGELES, 2026, 3, 9, 0, 0, 0),
        ],
    ),
    # 2026-11-01: 02:00 PDT becomes 01:00 PST; 01:30 happens twice, the day has 25 hours.
    "los-angeles-autumn": (
        LOS_ANGELES,
        [
            at(LOS_ANGELES, 2026, 10, 31, 23, 59, 59),
            at(LOS_ANGELES, 2026, 11, 1, 0, 0, 0),
            at(LOS_ANGELES, 2026, 11, 1, 1, 30, 0, fold=0),
            at(LOS_ANGELES, 2026, 11, 1, 1, 30, 0, fold=1),
            at(LOS_ANGELES, 2026, 11, 1, 23, 59, 59),
            at(LOS_ANGELES, 2026, 11, 2, 0, 0, 0),
        ],
    ),
    # 2026-03-29: 02:00 CET becomes 03:00 CEST. Local midnight is 23:00 UTC the day before.
    "berlin-spring": (
        BERLIN,
        [
            at(BERLIN, 2026, 3, 28, 23, 59, 59),
            at(BERLIN, 2026, 3, 29, 0, 0, 0),
            at(BERLIN, 2026, 3, 29, 3, 0, 0),
            at(BERLIN, 2026, 3, 29, 23, 59, 59),
            at(BERLIN, 2026, 3, 30, 0, 0, 0),
        ],
    ),
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    "berlin-autumn": (
        BERLIN,
        [
            at(BERLIN, 2026, 10, 24, 23, 59, 59),
            at(BERLIN, 2026, 10, 25, 0, 0, 0),
            at(BERLIN, 2026, 10, 25, 2, 30, 0, fold=0),
            at(BERLIN, 2026, 10, 25, 2, 30, 0, fold=1),
            at(BERLIN, 2026, 10, 25, 23, 59, 59),
            at(BERLIN, 2026, 10, 26, 0, 0, 0),
        ],
    ),
}


def zoned_team(zone: ZoneInfo) -> Team:
    team = Team.objects.create(slug="zoned", name="Zoned", timezone=zone.key)
    set_price(team, since=date(2026, 1, 1))
    return team


def run_edges(team: Team, instants: list[datetime]) -> list[Run]:
    return [
        finished_run(team, started_at=instant, usage={"inputTokens": 1000 * (n + 1)})
        for n, instant in enumerate(instants)
    ]


def expected_by_day(zone: ZoneInfo) -> dict[date, tuple[int, int, Decimal]]:
    """(runs, input tokens, cost) per local day, from the runs."""
    days: dict[date, list] = defaultdict(lambda: [0, 0, Decimal(0)])
    for run in Run.objects.all():
        day = days[run.started_at.astimezone(zone).date()]
        day[0] += 1
        day[1] += run.input_tokens or 0
        day[2] += run.cost or 0
    return {day: tuple(sums) for day, sums in days.items()}


def rollup_by_day(team: Team) -> dict[date, tuple[int, int, Decimal]]:
    days: dict[date, list] = defaultdict(lambda: [0, 0, Decimal(0)])
    for row in DailyUsage.objects.filter(team=team):
        day = days[row.day]
        day[0] += row.runs
        day[1] += row.input_tokens
        day[2] += row.cost
    return {day: tuple(sums) for day, sums in days.items()}


def stats_rows(team: Team) -> set[tuple]:
    return set(
        DailyRunStats.objects.filter(team=team).values_list(
            "day", "dimensions", "runs", "duration_buckets", "first_byte_buckets"
        )
    )


# --- The rollups at DST changes ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("edge", EDGES)
def test_each_day_sums_exactly_the_runs_of_that_local_day(edge):
    zone, instants = EDGES[edge]
    team = zoned_team(zone)
    run_edges(team, instants)
    expected = expected_by_day(zone)
    assert len(expected) == 3  # the day before, the day of the change, the day after
    assert rollup_by_day(team) == expected
    # The statistics rows describe the same runs per day as the sums (none is rebuilt).
    whole_days = DailyRunStats.objects.filter(team=team, dimensions="*")
    assert {row.day: row.runs for row in whole_days} == {d: s[0] for d, s in expected.items()}


@pytest.mark.django_db
@pytest.mark.parametrize("edge", EDGES)
def test_a_rebuild_gives_the_rows_the_finish_step_wrote(edge):
    zone, instants = EDGES[edge]
    team = zoned_team(zone)
    run_edges(team, instants)
    usage_columns = ("day", "dimensions", "runs", "input_tokens", "cost", "duration_ms")
    finished = set(DailyUsage.objects.filter(team=team).values_list(*usage_columns))
    stats = stats_rows(team)
    assert rebuild_usage(team) == len(instants)
    assert rebuild_run_stats(team) == len(instants)
    assert set(DailyUsage.objects.filter(team=team).values_list(*usage_columns)) == finished
    assert stats_rows(team) == stats


@pytest.mark.django_db
@pytest.mark.parametrize("edge", EDGES)
def test_reports_by_day_and_over_whole_periods_equal_the_runs(edge):
    zone, instants = EDGES[edge]
    team = zoned_team(zone)
    run_edges(team, instants)
    expected = expected_by_day(zone)
    first, change, last = sorted(expected)
    by_day = usage_report(team, Period("custom", first, last, zone), "day")
    assert [(row.key, row.runs, row.input_tokens, row.cost) for row in by_day.rows] == [
        (day.isoformat(), *expected[day]) for day in (first, change, last)
    ]
    # The day of the change alone, and the two days around it: every whole period adds up.
    for since, until in ((change, change), (first, change), (change, last)):
        report = usage_report(team, Period("custom", since, until, zone), "agent")
        wanted = [sums for day, sums in expected.items() if since <= day <= until]
        assert report.totals.runs == sum(runs for runs, _tokens, _cost in wanted)
        assert report.totals.input_tokens == sum(tokens for _runs, tokens, _cost in wanted)
        assert report.totals.cost == sum(cost for _runs, _tokens, cost in wanted)
        # The period's instants hold exactly its runs: what the thread report reads by.
        period = Period("custom", since, until, zone)
        inside = Run.objects.filter(started_at__gte=period.start, started_at__lt=period.end)
        assert inside.count() == report.totals.runs


def test_a_period_spans_the_local_days_whatever_their_length():
    spring = Period("custom", date(2026, 3, 8), date(2026, 3, 8), LOS_ANGELES)
    autumn = Period("custom", date(2026, 11, 1), date(2026, 11, 1), LOS_ANGELES)
    assert spring.end - spring.start == timedelta(hours=23)
    assert autumn.end - autumn.start == timedelta(hours=25)
    assert spring.start == datetime(2026, 3, 8, 8, tzinfo=UTC)
    berlin = Period("custom", date(2026, 3, 29), date(2026, 3, 29), BERLIN)
    assert berlin.start == datetime(2026, 3, 28, 23, tzinfo=UTC)


def test_a_skipped_midnight_starts_the_day_at_the_change():
    # America/Santiago moves its clocks from 00:00 to 01:00: 2026-09-06 has no midnight.
    santiago = ZoneInfo("America/Santiago")
    period = Period("custom", date(2026, 9, 6), date(2026, 9, 6), santiago)
    assert period.start.astimezone(santiago).date() == date(2026, 9, 6)
    assert (period.start - timedelta(seconds=1)).astimezone(santiago).date() == date(2026, 9, 5)
    assert period.end - period.start == timedelta(hours=23)


def test_today_and_this_month_are_the_teams():
    # 2026-03-01 05:00 UTC is still February 28th in Los Angeles.
    period = make_period("month", today=date(2026, 2, 28), zone=LOS_ANGELES)
    assert (period.since, period.until) == (date(2026, 2, 1), date(2026, 2, 28))
    assert month_start(datetime(2026, 3, 1, 5, tzinfo=UTC), LOS_ANGELES) == date(2026, 2, 1)
    assert month_start(datetime(2026, 3, 1, 5, tzinfo=UTC)) == date(2026, 3, 1)


# --- /api/usage and the report page ----------------------------------------------------------


@pytest.mark.django_db
def test_api_usage_by_day_uses_the_teams_days(client, acme, alice):
    Team.objects.filter(pk=acme.pk).update(timezone="America/Los_Angeles")
    acme.refresh_from_db()
    set_price(acme, since=date(2026, 1, 1))
    run_edges(acme, EDGES["los-angeles-spring"][1])
    login(client, alice)
    response = client.get(
        reverse("api_usage"), {"group_by": "day", "since": "2026-03-07", "until": "2026-03-09"}
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["timeZone"] == "America/Los_Angeles"
    assert [(g["key"], g["runs"]) for g in data["groups"]] == [
        ("2026-03-07", 1),
        ("2026-03-08", 4),
        ("2026-03-09", 1),
    ]
    assert data["totals"]["runs"] == 6


@pytest.mark.django_db
def test_the_spend_chart_has_one_bar_per_local_day(acme):
    Team.objects.filter(pk=acme.pk).update(timezone="Europe/Berlin")
    acme.refresh_from_db()
    set_price(acme, since=date(2026, 1, 1))
    # 23:30 UTC on the 28th is already the 29th in Berlin.
    finished_run(acme, started_at=datetime(2026, 3, 28, 23, 30, tzinfo=UTC), usage=USAGE)
    report = usage_report(acme, Period("custom", date(2026, 3, 28), date(2026, 3, 29), BERLIN))
    assert report.spend.days == [date(2026, 3, 28), date(2026, 3, 29)]
    assert report.spend.day_totals() == [Decimal(0), Decimal(3)]


# --- Budgets and prices ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("as_gateway", [False, True])
def test_a_budgets_month_is_cut_at_the_teams_midnight(as_gateway):
    from runs.models import Budget

    team = zoned_team(LOS_ANGELES)
    Budget.objects.create(team=team, monthly_limit=Decimal("5"))
    # $3 at 23:30 on March 31st and $3 at 00:30 on April 1st, Los Angeles time: both are
    # April in UTC.
    finished_run(team, started_at=at(LOS_ANGELES, 2026, 3, 31, 23, 30), usage=USAGE)
    finished_run(team, started_at=at(LOS_ANGELES, 2026, 4, 1, 0, 30), usage=USAGE)
    # The gateway knows its team only by id (runs.gateway.auth): the zone must still count.
    asking = Team(pk=team.pk) if as_gateway else team
    april = budget_statuses(asking, now=at(LOS_ANGELES, 2026, 4, 1, 12, 0))[0]
    assert (april.month, april.spent) == (date(2026, 4, 1), Decimal(3))
    # 8 pm on March 31st in Los Angeles is April 1st in UTC; the month is still March.
    march = budget_statuses(asking, now=at(LOS_ANGELES, 2026, 3, 31, 20, 0))[0]
    assert (march.month, march.spent) == (date(2026, 3, 1), Decimal(3))


@pytest.mark.django_db
def test_a_price_takes_effect_at_the_teams_midnight():
    team = Team.objects.create(slug="zoned", name="Zoned", timezone="Europe/Berlin")
    set_price(team, since=date(2026, 3, 29))
    # 23:30 UTC on the 28th is 00:30 on the 29th in Berlin: the price is in force.
    priced = finished_run(team, started_at=datetime(2026, 3, 28, 23, 30, tzinfo=UTC), usage=USAGE)
    # 22:30 UTC on the 28th is 23:30 on the 28th in Berlin: not yet.
    unpriced = finished_run(team, started_at=datetime(2026, 3, 28, 22, 30, tzinfo=UTC), usage=USAGE)
    assert (priced.cost, priced.cost_status) == (Decimal(3), "computed")
    assert (unpriced.cost, unpriced.cost_status) == (None, "unpriced")


# --- The home page ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_home_pages_today_is_the_teams_today(acme):
    from django.utils import timezone

    now = timezone.now()
    # Whatever the hour, one of the two zones furthest from UTC is on another date than UTC.
    name = "Pacific/Kiritimati" if now.hour >= 10 else "Etc/GMT+12"
    Team.objects.filter(pk=acme.pk).update(timezone=name)
    acme.refresh_from_db()
    local = timezone.now().astimezone(ZoneInfo(name)).date()
    assert local != timezone.now().date()
    data = overview(acme)
    assert data.today.until == local
    assert data.month.since == local.replace(day=1)


@pytest.mark.django_db
def test_a_report_days_link_lists_exactly_its_runs(client, acme, alice):
    Team.objects.filter(pk=acme.pk).update(timezone="America/Los_Angeles")
    acme.refresh_from_db()
    set_price(acme, since=date(2026, 1, 1))
    runs = run_edges(acme, EDGES["los-angeles-spring"][1])
    report = usage_report(
        acme, Period("custom", date(2026, 3, 7), date(2026, 3, 9), LOS_ANGELES), "day"
    )
    login(client, alice)
    for row in report.rows:
        listed = shown_run_ids(client.get(reverse("run_list"), row.filters))
        day = date.fromisoformat(row.key)
        wanted = [r.pk for r in runs if r.started_at.astimezone(LOS_ANGELES).date() == day]
        assert sorted(listed) == sorted(wanted) and len(listed) == row.runs


@pytest.mark.django_db
@pytest.mark.parametrize("edge", EDGES)
def test_the_thread_report_counts_the_runs_of_the_teams_days(edge):
    """The thread report picks a run by its start in SQL (runs.reports.queries
    _counted_in_period): each thread's row holds exactly its finished runs of the local days,
    none of another team's in a thread of the same name, and its percentiles are the runs'
    own."""
    zone, instants = EDGES[edge]
    team = zoned_team(zone)
    other = Team.objects.create(slug="other", name="Other")
    set_price(other, since=date(2026, 1, 1))
    for n, instant in enumerate(instants):
        finished_run(team, started_at=instant, usage={"inputTokens": 1000 * (n + 1)},
                     thread_id=f"thread-{n % 2}", duration_ms=100 * (n + 1))  # fmt: skip
        finished_run(other, started_at=instant, usage=USAGE, thread_id="thread-0")
    first, change, last = sorted(expected_by_day(zone))
    # A run still going is not counted yet, whatever its thread.
    thread_0 = Run.objects.filter(team=team, thread__upstream_id="thread-0").first().thread
    make_run(team, thread=thread_0, status="running", started_at=instants[1], input_tokens=10**6)
    for since, until in ((change, change), (first, change), (change, last), (first, last)):
        expected: dict[str, list] = defaultdict(list)
        for run in Run.objects.filter(team=team, status="completed").select_related("thread"):
            if since <= run.started_at.astimezone(zone).date() <= until:
                expected[run.thread.upstream_id].append(run)
        report = usage_report(team, Period("custom", since, until, zone), "thread")
        got = {
            row.key: (row.runs, row.input_tokens, row.cost, row.duration_p95_ms)
            for row in report.rows
        }
        assert got == {
            thread: (
                len(runs),
                sum(run.input_tokens for run in runs),
                sum(run.cost for run in runs),
                float(sorted(run.duration_ms for run in runs)[math.ceil(0.95 * len(runs)) - 1]),
            )
            for thread, runs in expected.items()
        }
