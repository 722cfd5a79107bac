"""The threads list tells threads apart: each row's latest run, agent, turns, total cost, first
prompt and start date, sorted by activity, read in a fixed number of queries."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from runs.demo.history import _restamp_threads
from runs.models import Thread
from tests.helpers import make_run

pytestmark = pytest.mark.usefixtures("fast_passwords")

SEEDED = datetime(2026, 3, 20, 8, 0, tzinfo=UTC)  # when a seed wrote the rows, not activity


def thread_with_runs(team, upstream_id: str, prompts: list[str], first: datetime, **extra):
    thread = Thread.objects.create(
        team=team,
        upstream_id=upstream_id,
        agent=extra.pop("agent", "support-chat"),
        title=prompts[0].splitlines()[0],
        turns=len(prompts),
        created_at=SEEDED,
        last_activity_at=extra.pop("last_activity_at", SEEDED),
    )
    for turn, prompt in enumerate(prompts):
        started = first + timedelta(hours=turn)
        make_run(
            team,
            thread=thread,
            agent=thread.agent,
            upstream_thread_id=upstream_id,
            prompt=prompt,
            started_at=started,
            finished_at=started + timedelta(seconds=30),
            **extra,
        )
    return thread


def rows(html: str) -> dict[str, str]:
    found = {}
    for match in re.finditer(r'data-thread="([^"]+)"', html):
        end = html.index("</tr>", match.start())
        found[match.group(1)] = html[match.start() : end]
    return found


def test_threads_with_the_same_title_read_apart(client, alice, acme):
    thread_with_runs(
        acme,
        "thr_a",
        ["Fix the build\nThe linker fails on arm64", "Go on."],
        datetime(2026, 3, 1, 9, tzinfo=UTC),
        cost=Decimal("0.0042"),
        cost_status="computed",
        last_activity_at=datetime(2026, 3, 1, 10, 0, 30, tzinfo=UTC),
    )
    thread_with_runs(
        acme,
        "thr_b",
        ["Fix the build\nThe tests time out on CI"],
        datetime(2026, 3, 5, 14, tzinfo=UTC),
        agent="code-assistant",
        last_activity_at=datetime(2026, 3, 5, 14, 0, 30, tzinfo=UTC),
    )
    client.force_login(alice)
    html = client.get(reverse("thread_list")).content.decode()
    shown = rows(html)
    assert list(shown) == ["thr_b", "thr_a"]  # by activity
    first, second = shown["thr_a"], shown["thr_b"]
    assert "The linker fails on arm64" in first and "The tests time out on CI" in second
    assert 'datetime="2026-03-01T09:00:00Z"' in first  # started
    # The latest run's end, not the row's stamp.
    assert re.search(r'<td><time datetime="2026-03-01T10:00:30Z"', first)
    assert "support-chat" in first and "code-assistant" in second
    assert '<td class="num">2</td>' in first and '<td class="num">1</td>' in second
    assert "$0.0084" in first  # two runs of $0.0042
    assert "unpriced" in second


def test_the_latest_run_is_shown_even_when_the_stamp_lags(client, alice, acme):
    thread_with_runs(acme, "thr_late", ["Hello"], datetime(2026, 2, 1, 12, tzinfo=UTC))
    client.force_login(alice)
    row = rows(client.get(reverse("thread_list")).content.decode())["thr_late"]
    assert 'datetime="2026-02-01T12:00:30Z"' in row
    assert "2026-03-20" not in row


def test_the_list_reads_a_fixed_number_of_queries(client, alice, acme):
    client.force_login(alice)

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(reverse("thread_list")).status_code == 200
        return len(queries)

    thread_with_runs(acme, "thr_0", ["One", "Two"], datetime(2026, 3, 1, tzinfo=UTC))
    few = count()
    for index in range(1, 25):
        thread_with_runs(
            acme, f"thr_{index}", ["One", "Two"], datetime(2026, 3, 1, tzinfo=UTC), cost=Decimal(1)
        )
    assert count() == few


@pytest.mark.django_db
def test_the_demo_stamps_threads_with_their_runs_times(acme):
    thread = thread_with_runs(
        acme, "thr_demo", ["Hi", "Go on."], datetime(2026, 1, 10, 8, tzinfo=UTC)
    )
    _restamp_threads(acme)
    thread.refresh_from_db()
    assert thread.created_at == datetime(2026, 1, 10, 8, tzinfo=UTC)
    assert thread.last_activity_at == datetime(2026, 1, 10, 9, 0, 30, tzinfo=UTC)
