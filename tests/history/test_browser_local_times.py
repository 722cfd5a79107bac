"""In a real browser, times read in the viewer's time zone with UTC on hover; without
JavaScript they stay in UTC and the page says so."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import PASSWORD, TEST_ENCRYPTION_KEY
from tests.helpers import make_run
from tests.live import RtdashServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STARTED = datetime(2026, 3, 10, 22, 45, 7, 123456, tzinfo=UTC)


@pytest.fixture
def fast_passwords():
    """Overrides conftest's: the live server checks passwords with the production hashers."""


@pytest.fixture
def live(upstream, acme_key):
    with RtdashServer(upstream.url, TEST_ENCRYPTION_KEY) as server:
        yield server


@pytest.fixture
def late_run(live, acme):
    """Written before the browser starts: Django refuses ORM calls beside its event loop."""
    return make_run(acme, started_at=STARTED)


def log_in(context, live) -> object:
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live.url}/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/")
    return page


def test_times_are_local_with_utc_on_hover(live, alice, late_run, browser):
    context = browser.new_context(timezone_id="Asia/Kolkata")  # UTC+5:30: the day changes
    page = log_in(context, live)
    page.goto(f"{live.url}/runs/")
    started = page.locator("tr.run time").first
    assert started.inner_text() == "2026-03-11 04:15:07"
    assert started.get_attribute("title") == "2026-03-10 22:45:07 UTC"
    assert started.get_attribute("datetime") == "2026-03-10T22:45:07Z"
    note = page.locator("[data-times-note]").first.inner_text()
    assert note.startswith("Times in your time zone (Asia/")  # Kolkata, or its alias Calcutta
    context.close()


def test_without_javascript_times_stay_utc_and_say_so(live, alice, late_run, browser):
    context = browser.new_context(timezone_id="Asia/Kolkata", java_script_enabled=False)
    page = log_in(context, live)
    page.goto(f"{live.url}/runs/")
    assert page.locator("tr.run time").first.inner_text() == "2026-03-10 22:45:07 UTC"
    assert page.locator("[data-times-note]").first.inner_text() == "Times in UTC."
    context.close()
