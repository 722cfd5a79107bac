"""The report page in a real Chromium: charts and table are there, and htmx regrouping works."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.browsers import log_in
from tests.conftest import PASSWORD, TEST_ENCRYPTION_KEY
from tests.live import RtdashServer
from tests.reporting import finished_run, set_price

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def live_reports(acme, alice):
    # The live server checks passwords with the default hashers, not the tests' fast one.
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    alice.password = PBKDF2PasswordHasher().encode(PASSWORD, "browsersalt")
    alice.save(update_fields=["password"])
    for agent in ("code-assistant", "deep-thinker", "support-chat"):  # and none for no-price
        set_price(acme, agent=agent, since=timezone.now().date() - timedelta(days=40))
    for days, agent in [(0, "code-assistant"), (1, "deep-thinker"), (3, "support-chat"),
                        (3, "code-assistant"), (9, "no-price")]:  # fmt: skip
        finished_run(
            acme,
            agent=agent,
            usage={"inputTokens": 200_000 * (days + 1), "outputTokens": 20_000},
            started_at=timezone.now() - timedelta(days=days),
            first_byte_ms=120,
        )
    with RtdashServer("http://127.0.0.1:9/v1", TEST_ENCRYPTION_KEY) as server:
        yield server


@pytest.fixture
def page(live_reports, browser):
    # live_reports first: its runs are written before Playwright's loop starts in this thread.
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    return log_in(page, live_reports.url, "alice")


def test_the_report_page_has_charts_and_a_table(page, live_reports):
    page.goto(live_reports.url + "/reports?period=30d&group_by=agent")
    spend = page.locator('[data-chart="spend-over-time"] svg')
    assert spend.count() == 1
    assert spend.bounding_box()["width"] > 600  # drawn at a readable size
    # One bar segment per agent and day with priced spend, each with its amount as a tooltip;
    # every day of the 30 has its slot, a day without spend a thin mark with its own tooltip.
    segments = spend.locator("rect:not(.empty-day) title")
    assert segments.count() == 4
    assert "code-assistant on" in segments.first.text_content()
    assert spend.locator("g.day").count() == 30
    by_group = page.locator('[data-chart="spend-by-group"] svg rect')
    assert by_group.count() == 3
    rows = page.locator("table.report-table tbody tr")
    assert rows.count() == 4
    assert page.locator("table.report-table").get_by_text("no-price").count() == 1
    unpriced = rows.filter(has_text="no-price").locator("td").nth(8)
    assert unpriced.inner_text() == "unpriced"
    page.screenshot(path=str(live_reports_screenshot()), full_page=True)


def test_regrouping_by_day_updates_the_report_in_place(page, live_reports):
    page.goto(live_reports.url + "/reports?period=30d&group_by=agent")
    page.locator('#report [role=group][aria-label="Group by"] a', has_text="Day").click()
    page.wait_for_url("**group_by=day**")
    header = page.locator("table.report-table thead th").first
    header.wait_for()
    assert header.inner_text().lower() == "day"
    assert page.locator("table.report-table tbody tr").count() == 4  # four days with runs
    assert page.locator('[data-chart="spend-over-time"] svg').count() == 1


def live_reports_screenshot():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "var"
    folder.mkdir(exist_ok=True)
    return folder / "reports-screenshot.png"
