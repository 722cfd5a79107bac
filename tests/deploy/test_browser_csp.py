"""The Content-Security-Policy in a real Chromium: every page keeps to it, and the playground
still streams a run over its websocket with it on.

A violation is caught two ways: the `securitypolicyviolation` event (an init script in every
document reports it to the test) and Chromium's console error about the policy.
"""

from __future__ import annotations

import time

import httpx
import pytest

from runs.models import Run
from tests.browsers import Watched, log_in
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.experiments.helpers import wait_until_ended
from tests.live import RtdashServer
from tests.reporting import set_price

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TIMEOUT_MS = 20_000
# What an injection that got past escaping would add to a page.
INJECT = """() => {
  const script = document.createElement("script");
  script.textContent = "window.ranInline = true;";
  document.head.append(script);
  document.body.insertAdjacentHTML("beforeend", '<p style="color: red">styled</p>');
}"""


@pytest.fixture
def fast_passwords():
    """Overrides conftest's: the live server checks passwords with the production hashers."""


@pytest.fixture
def live(upstream, acme, acme_key, alice):
    set_price(acme)  # priced runs, so the reports draw their charts
    # Billing from the simulator too, for the reconciliation page.
    with RtdashServer(
        upstream.url, TEST_ENCRYPTION_KEY, RUNTOOLS_BILLING_URL=upstream.billing_url
    ) as server:
        yield server


@pytest.fixture
def recorded(live, acme_token) -> tuple[str, int]:
    """Two runs of one thread through the live gateway: the thread's id and the first run's.

    Made before the browser starts: Playwright's sync API keeps an event loop in this thread,
    next to which Django refuses ORM calls."""
    with httpx.Client(base_url=live.url, headers={"X-API-Key": acme_token[1]}, timeout=30) as api:
        first = api.post("/v1/run", json={"agent": "support-chat", "prompt": "Where is 42?",
                                          "stream": False})  # fmt: skip
        thread = first.json()["data"]["threadId"]
        api.post("/v1/run", json={"agent": "support-chat", "prompt": "And 43?",
                                  "threadId": thread, "stream": False})  # fmt: skip
    deadline = time.monotonic() + 20
    while Run.objects.exclude(status="running").count() < 2:
        assert time.monotonic() < deadline, "the runs were not recorded"
        time.sleep(0.1)
    return thread, Run.objects.order_by("pk").first().pk


@pytest.fixture
def experiment_id(live, recorded, acme_token) -> int:
    """The recorded thread replayed as an experiment through the live API, to its end."""
    thread, _run_id = recorded
    body = {"source": {"thread": thread}, "variants": [{"agent": "code-assistant"}]}
    answer = httpx.post(
        f"{live.url}/api/experiments", json=body, headers={"X-API-Key": acme_token[1]}, timeout=30
    )
    assert answer.status_code == 201, answer.text
    return wait_until_ended(answer.json()["data"]["id"]).pk


def test_no_page_breaks_the_policy(live, recorded, experiment_id, browser):
    thread_id, run_id = recorded
    watched = Watched(browser)
    log_in(watched.page, live.url)
    page = watched.page
    for path in [
        "/", "/playground", "/playground/compare", "/runs/", f"/runs/{run_id}/", "/threads/",
        f"/threads/{thread_id}/",
        "/reports?period=30d", "/reports?period=30d&group_by=day", "/reports/prices",
        "/reports/budgets", "/settings/", "/settings/audit/", "/teams/", "/experiments/",
        "/experiments/new/", f"/experiments/new/?thread={thread_id}",
        f"/experiments/{experiment_id}/", "/accounting/reconciliation", "/alerts/",
        "/settings/alerts/",
    ]:  # fmt: skip
        watched.visit(live.url + path)

    # htmx swaps: the runs filter, and a report regrouped in place.
    watched.visit(f"{live.url}/runs/")
    page.select_option("#id_agent", "support-chat")
    page.wait_for_url("**/runs/?*agent=support-chat*")
    watched.visit(f"{live.url}/reports?period=30d")
    assert page.locator("svg").count() >= 1  # the charts, inline SVG
    # A new token over htmx: copy.js (no longer inline) shows its Copy button.
    watched.visit(f"{live.url}/settings/")
    page.locator("#tokens input[name=name]").fill("ci")
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("button", name="Copy").wait_for(state="visible")

    # Django's admin login, as someone not logged in.
    anonymous = Watched(browser)
    anonymous.visit(f"{live.url}/admin/login/")
    watched.settle()
    anonymous.settle()
    assert watched.violations + anonymous.violations == []


def test_the_playground_streams_a_run_under_the_policy(live, browser):
    watched = Watched(browser)
    log_in(watched.page, live.url)
    watched.visit(f"{live.url}/playground")
    page = watched.page
    page.get_by_label("Agent").fill("code-assistant")
    page.get_by_label("Prompt").fill("Run the tests and summarize failures.")
    page.get_by_role("button", name="Run").click()
    page.wait_for_function(
        "() => document.querySelector('#statusbar [data-status]').textContent === 'Completed'"
    )
    answer = "".join(page.locator("#output .answer").all_text_contents())
    watched.settle()
    assert watched.violations == []
    assert answer.strip()


def test_a_violation_would_be_seen(live, browser):
    """The watch itself works: an inline script and a style attribute, as an injection would
    add them, are blocked and reported."""
    watched = Watched(browser)
    watched.visit(f"{live.url}/login/")
    watched.page.evaluate(INJECT)
    watched.settle()
    assert watched.page.evaluate("window.ranInline === undefined")
    assert any(violation.startswith("script-src") for violation in watched.violations)
    assert any(violation.startswith("style-src") for violation in watched.violations)
