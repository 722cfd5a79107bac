"""A real browser replays a thread from its page and watches the experiment fill in live.

rtdash runs under daphne in a subprocess sharing the test database (tests.live); the
experiment runs in that server's background loop, against the simulator.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from runs.models import Run
from tests.conftest import PASSWORD, TEST_ENCRYPTION_KEY
from tests.live import RtdashServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SLOW_VARIANT = '{"agent": "slow-poke", "metadata": {"simulate": {"dripMs": 100}}}'


@pytest.fixture
def fast_passwords():
    """Overrides conftest's: the live server checks passwords with the production hashers."""


@pytest.fixture
def live(upstream, acme_key):
    with RtdashServer(upstream.url, TEST_ENCRYPTION_KEY) as server:
        yield server


@pytest.fixture
def thread_id(live, alice, acme_token) -> str:
    """A two-turn thread through the live gateway, recorded before the browser starts."""
    with httpx.Client(base_url=live.url, headers={"X-API-Key": acme_token[1]}, timeout=30) as http:
        first = http.post(
            "/v1/run",
            json={"agent": "support-chat", "prompt": "Where is parcel 42?", "stream": False},
        )
        thread = first.json()["data"]["threadId"]
        http.post(
            "/v1/run",
            json={
                "agent": "support-chat",
                "prompt": "And 43?",
                "threadId": thread,
                "stream": False,
            },
        )
    deadline = time.monotonic() + 20
    while Run.objects.exclude(status="running").count() < 2:
        assert time.monotonic() < deadline, "the runs were not recorded"
        time.sleep(0.1)
    return thread


def test_replay_a_thread_and_watch_it_fill_in(live, thread_id, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(20_000)
    page.goto(f"{live.url}/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/")

    page.goto(f"{live.url}/threads/{thread_id}/")
    page.click("a.replay")
    page.wait_for_url("**/experiments/new/**")
    page.fill("#id_name", "Slow poke vs support-chat")
    page.fill("#id_variants", f"agent=support-chat,maxTurns=2\n{SLOW_VARIANT}")
    page.click("button[type=submit]")
    page.wait_for_url("**/experiments/*/")
    assert page.locator("#experiment-results").get_attribute("data-status") == "running"
    assert page.locator("th", has_text="Baseline (recorded)").count() == 1
    # Marks this document: still there at the end means the table updated in place.
    page.evaluate("window.stillHere = true")
    # Live progress: the slow variant's first turn finishes while its second still runs.
    page.wait_for_function(
        "() => document.querySelectorAll('td.cell[data-status=completed]').length >= 3"
        " && document.querySelector('#experiment-results').dataset.status === 'running'"
    )
    page.wait_for_selector("#experiment-results[data-status=completed]", timeout=30_000)
    assert page.evaluate("window.stillHere") is True
    assert page.locator("td.cell[data-status=completed]").count() == 6  # baseline + 2 variants
    assert page.locator(".experiment-status", has_text="Completed").count() == 1
    assert page.locator("tfoot .totals td").count() == 3
    page.screenshot(path=str(screenshot_path()), full_page=True)


def screenshot_path() -> Path:
    folder = Path(__file__).resolve().parents[2] / "var"
    folder.mkdir(exist_ok=True)
    return folder / "experiment-screenshot.png"


def test_tick_runs_on_the_runs_list_and_replay_them_without_javascript(live, thread_id, browser):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{live.url}/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/")

    page.goto(f"{live.url}/runs/")
    excerpt = page.locator(".excerpt", has_text="Where is parcel 42?")
    first_turn = page.locator("tr.run").filter(has=excerpt)
    run_id = first_turn.get_attribute("data-run")
    first_turn.locator("input[type=checkbox]").check()
    page.click("text=Replay selected as experiment")
    page.wait_for_url("**/experiments/new/**")
    assert f"runs {run_id}." in page.locator("main").inner_text()
    page.fill("#id_variants", "agent=support-chat,maxTurns=2")
    page.click("button[type=submit]")
    page.wait_for_url("**/experiments/*/")
    # One case, the ticked run: its prompt, and the run itself as the baseline.
    assert page.locator("tr.case").count() == 1
    assert page.locator("tr.case td.prompt").inner_text() == "Where is parcel 42?"
    assert page.locator(f"tr.case a[href='/runs/{run_id}/']").count() == 1
    context.close()
