"""Reports people can read: axis ticks on round 1-2-5 amounts, a slot for every day of the
period, and each period's change against the previous period of the same length."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from runs.reports.charts import _nice_ceiling, nice_step
from tests.conftest import PASSWORD
from tests.reporting import finished_run, set_price

USAGE = {"inputTokens": 1_000_000, "outputTokens": 0}  # $3 at the default test price


def page(client, user, query: str) -> str:
    assert client.login(username=user.username, password=PASSWORD)
    response = client.get(f"/reports?{query}")
    assert response.status_code == 200
    return response.content.decode()


def spend_chart(html: str) -> str:
    start = html.index('data-chart="spend-over-time"')
    return html[start : html.index("</figure>", start)]


def is_one_two_five(amount: float) -> bool:
    mantissa = f"{amount:.6e}".split("e")[0]
    return mantissa in ("1.000000", "2.000000", "5.000000")


@pytest.mark.parametrize("largest", [0.00037, 0.0123, 0.9, 3.7, 12, 47, 101, 1234, 98_765])
def test_axis_steps_are_one_two_five_and_cover_the_largest_day(largest):
    ceiling, step = _nice_ceiling(largest)
    assert is_one_two_five(step)
    assert ceiling >= largest and ceiling - step < largest
    assert round(ceiling / step) <= 5
    assert nice_step(largest) == step


@pytest.mark.django_db
def test_the_chart_draws_every_day_and_round_ticks(client, alice, acme):
    set_price(acme, since=(timezone.now() - timedelta(days=60)).date())
    now = timezone.now()
    # $3, $6 and $9 days with empty days between: the axis must end on a round amount.
    for days_ago, runs in ((1, 1), (4, 2), (20, 3)):
        for _ in range(runs):
            finished_run(acme, usage=USAGE, started_at=now - timedelta(days=days_ago))
    chart = spend_chart(page(client, alice, "period=30d"))
    assert chart.count("data-day=") == 30
    assert chart.count('class="empty-day"') == 27
    ticks = re.findall(r'text-anchor="end"[^>]*>\$([0-9,.]+)</text>', chart)
    amounts = [float(tick.replace(",", "")) for tick in ticks]
    assert amounts == [0, 2, 4, 6, 8, 10]
    # Bars say their amount as every page writes money.
    assert f"code-assistant on {now.date() - timedelta(days=4):%Y-%m-%d}: $6.00</title>" in chart
    assert chart.count("data-day=") == 30
    week = spend_chart(page(client, alice, "period=7d"))
    assert week.count("data-day=") == 7


@pytest.mark.django_db
def test_a_period_shows_its_change_against_the_previous_one(client, alice, acme):
    set_price(acme, since=(timezone.now() - timedelta(days=60)).date())
    now = timezone.now()
    for days_ago in (9, 10):  # the previous 7 days: two $3 runs
        finished_run(acme, usage=USAGE, started_at=now - timedelta(days=days_ago))
    for days_ago in (0, 1, 2):  # this week: three $3 runs, one failed
        finished_run(acme, usage=USAGE, started_at=now - timedelta(days=days_ago, minutes=5))
    finished_run(acme, usage=USAGE, status="failed", started_at=now - timedelta(hours=2))
    html = page(client, alice, "period=7d")
    change = html[html.index('class="period-change') :]
    change = change[: change.index("</p>")]
    today = now.date()
    previous = f"{today - timedelta(days=13):%Y-%m-%d} \u2013 {today - timedelta(days=7):%Y-%m-%d}"
    assert "Against the previous 7 days" in change and previous in change
    assert '<span class="change up">+100%</span></strong> (was $6.00)' in change  # $12 vs $6
    assert '<span class="change up">+100%</span></strong> (was 2)' in change  # 4 runs vs 2
    assert 'failed <strong><span class="change muted"' in change  # none before: "new"


@pytest.mark.django_db
def test_no_previous_runs_say_so_rather_than_a_percentage(client, alice, acme):
    set_price(acme, since=(timezone.now() - timedelta(days=60)).date())
    finished_run(acme, usage=USAGE)
    html = page(client, alice, "period=30d")
    change = html[html.index('class="period-change') :]
    change = change[: change.index("</p>")]
    assert "The previous 30 days (" in change and "had no runs to compare with." in change
    assert "%" not in change and "inf" not in change.lower()
