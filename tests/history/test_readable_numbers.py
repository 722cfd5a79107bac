"""Numbers people can read: one money format, one duration style, enum values as words,
moments as <time> in UTC (rewritten to the viewer's zone by static/times.js), and CSV that a
spreadsheet reads the same way: UTC to the second, true/false, rounded floats."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse

from runs.core import formatting
from tests.helpers import NOW, make_run

pytestmark = [pytest.mark.usefixtures("fast_passwords"), pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("0", "$0.00"),
        ("0.5", "$0.50"),
        ("0.012345", "$0.0123"),
        ("0.000123456", "$0.000123"),
        ("0.0000004", "$0.0000004"),
        ("0.99951", "$1.00"),
        ("1", "$1.00"),
        ("1234.5678", "$1,234.57"),
        ("-0.0123456", "-$0.0123"),
    ],
)
def test_money_keeps_cents_or_three_significant_digits(amount, shown):
    assert formatting.money(Decimal(amount)) == shown
    assert formatting.money_number(Decimal(amount)) == shown.replace("$", "").replace(",", "")


def test_no_price_reads_unpriced_never_zero():
    assert formatting.money(None) == "unpriced"
    assert formatting.money_number(None) == ""


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (3.7, "3.7 ms"),
        (850, "850 ms"),
        (12_400, "12.4 s"),
        (59_990, "1 min 0 s"),
        (185_000, "3 min 5 s"),
        (7_500_000, "2 h 5 min"),
        (None, "—"),
    ],
)
def test_durations_have_one_style(ms, shown):
    assert formatting.duration(ms) == shown


def test_enum_values_read_as_words():
    assert formatting.enum_label("in_sandbox") == "In sandbox"
    assert formatting.enum_label("completed") == "Completed"
    assert formatting.enum_label("") == "—"


def test_moments_are_utc_to_the_second():
    moment = datetime(2026, 3, 10, 12, 0, 5, 123456, tzinfo=UTC)
    assert formatting.utc_iso(moment) == "2026-03-10T12:00:05Z"
    assert formatting.utc_text(moment) == "2026-03-10 12:00 UTC"


def test_the_run_page_reads_like_the_runs_list(client, alice, acme):
    run = make_run(
        acme,
        started_at=NOW.replace(microsecond=654321),
        cost=Decimal("0.012345"),
        cost_status="computed",
        execution_mode="in_sandbox",
        first_byte_ms=420,
        overhead_ms=0.43219,
        duration_ms=65_000,
    )
    client.force_login(alice)
    listed = client.get(reverse("run_list")).content.decode()
    page = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    for html in (listed, page):
        assert "$0.0123<" in html and "0.012345" not in html
        assert "1 min 5 s" in html
        # UTC in the markup and on hover; the page says times are UTC until the script runs.
        assert '<time datetime="2026-03-10T12:00:00Z" data-style="seconds"' in html
        assert 'title="2026-03-10 12:00:00 UTC"' in html
        assert "654321" not in html and ".654" not in html
        assert "Times in UTC." in html
    assert "In sandbox" in page and "in_sandbox" not in page
    assert "First token" in page and "0.4 ms" in page and "first frame" not in page.lower()


async def test_csv_reads_utc_seconds_booleans_and_rounded_numbers(async_client, alice, acme):
    await sync_to_async(make_run)(
        acme,
        started_at=NOW.replace(microsecond=654321),
        cost=Decimal("0.000123456"),
        cost_status="computed",
        overhead_ms=1.23456,
        synthetic=True,
    )
    await async_client.aforce_login(alice)
    response = await async_client.get(reverse("run_export", args=["csv"]))
    text = b"".join([chunk async for chunk in response.streaming_content]).decode()
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["started_at"] == "2026-03-10T12:00:00Z"
    assert row["finished_at"] == ""
    assert row["cost"] == "0.000123"  # as on the page, without the dollar sign
    assert row["overhead_ms"] == "1.2"
    assert row["synthetic"] == "true"


async def test_json_lines_keep_the_exact_values(async_client, alice, acme):
    run = await sync_to_async(make_run)(
        acme, cost=Decimal("0.000123456"), cost_status="computed", synthetic=False
    )
    await async_client.aforce_login(alice)
    response = await async_client.get(reverse("run_export", args=["jsonl"]))
    text = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert '"cost": "0.000123456"' in text and '"synthetic": false' in text
    assert run.started_at - NOW == timedelta(0)


@pytest.mark.parametrize(
    ("moment", "shown"),
    [
        ("2026-03-10T12:00:00.257084+00:00", 'datetime="2026-03-10T12:00:00Z"'),
        ("2026-03-10T12:00:00Z", 'datetime="2026-03-10T12:00:00Z"'),
        ("not a moment", "not a moment"),
        ("", "—"),
    ],
)
def test_moments_given_as_iso_text_read_like_the_others(moment, shown):
    # Reconciliation shows moments from JSON answers and the upstream, as ISO text.
    from runs.templatetags.rtdash_format import when

    assert shown in str(when(moment))
    assert ".257084" not in str(when(moment))
