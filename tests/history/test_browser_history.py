"""A real browser against a real rtdash: log in, filter, open a run, open its thread, export.

rtdash runs under daphne in a subprocess sharing the test database (tests.live), talking to
the simulator; the runs are made through its gateway exactly as a script would make them.
"""

from __future__ import annotations

import csv
import time

import httpx
import pytest

from runs.models import Run
from tests.browsers import log_in
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.live import RtdashServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fast_passwords():
    """Overrides conftest's: the live server checks passwords with the production hashers."""


@pytest.fixture
def live(upstream, acme_key):
    with RtdashServer(upstream.url, TEST_ENCRYPTION_KEY) as server:
        yield server


@pytest.fixture
def recorded(live, alice, acme_token) -> str:
    """Three runs through the live gateway, two of them one support-chat thread.

    Made (and waited for) before the browser starts: Playwright's sync API runs an event
    loop in this thread, and Django refuses ORM calls next to one.
    """
    token = acme_token[1]
    with httpx.Client(base_url=live.url, headers={"X-API-Key": token}, timeout=30) as http:
        first = http.post(
            "/v1/run",
            json={"agent": "support-chat", "prompt": "Where is parcel 42?", "stream": False},
        )
        thread_id = first.json()["data"]["threadId"]
        http.post(
            "/v1/run",
            json={"agent": "support-chat", "prompt": "And parcel 43?", "threadId": thread_id},
        ).read()
        http.post("/v1/run", json={"agent": "code-assistant", "prompt": "Run the tests"}).read()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if Run.objects.exclude(status="running").count() == 3:
            return thread_id
        time.sleep(0.1)
    raise AssertionError("the runs were not recorded")


def test_filter_open_a_run_open_its_thread_and_export(live, recorded, browser):
    thread_id = recorded
    page = browser.new_page(accept_downloads=True)
    page.set_default_timeout(15_000)

    log_in(page, live.url, "alice")

    page.goto(f"{live.url}/runs/")
    assert page.locator("tr.run").count() == 3

    # Filtering updates the table in place and the URL with it.
    page.select_option("#id_agent", "support-chat")
    page.wait_for_url("**/runs/?*agent=support-chat*")
    page.wait_for_function("document.querySelectorAll('tr.run').length === 2")
    assert page.locator("#run-filters").count() == 1  # the form was not re-rendered
    filtered_url = page.url
    assert all(
        "support-chat" in text for text in page.locator("tr.run td:nth-child(2)").all_inner_texts()
    )

    # Open the newest run, then its thread.
    page.locator("tr.run").first.locator("td:first-child a").click()
    page.wait_for_url("**/runs/*/")
    assert "And parcel 43?" in page.locator("pre.prompt").inner_text()
    assert page.locator("ol.timeline li.item").count() > 0
    page.click("text=Show raw frames")
    page.wait_for_selector("table.frames tr.frame")
    page.click("text=Open its thread")
    page.wait_for_url(f"**/threads/{thread_id}/")
    turns = page.locator("li.turn")
    assert turns.count() == 2
    assert "Where is parcel 42?" in turns.nth(0).inner_text()
    assert "And parcel 43?" in turns.nth(1).inner_text()
    assert "Running total" in turns.nth(1).inner_text()

    # Back twice: the filtered list, as it was.
    page.go_back()
    page.go_back()
    page.wait_for_url(filtered_url)
    page.wait_for_function("document.querySelectorAll('tr.run').length === 2")

    # Export what the filter shows.
    with page.expect_download() as download:
        page.click("text=CSV")
    with open(download.value.path(), newline="") as exported:
        rows = list(csv.DictReader(exported))
    assert [row["agent"] for row in rows] == ["support-chat", "support-chat"]
    assert rows[0]["prompt"] == "And parcel 43?"
    assert {row["thread"] for row in rows} == {thread_id}
