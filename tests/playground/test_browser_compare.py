"""Compare side by side in a real Chromium: three columns streaming at once, each a run."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from runs.models import Run
from tests.browsers import TIMEOUT_MS, log_in, orm
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.live import RtdashServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fast_passwords():
    """Overrides conftest's: the live server checks passwords with the production hashers."""


@pytest.fixture
def live(upstream, acme_key, bob):
    with RtdashServer(upstream.url, TEST_ENCRYPTION_KEY, RTDASH_REAPER_INTERVAL="0") as server:
        yield server


def playground_runs() -> list[Run]:
    return list(Run.objects.filter(source="playground").order_by("pk"))


def test_three_columns_stream_at_once(live, browser):
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, live.url, "bob")
    page.goto(f"{live.url}/playground")
    # Loaded, deferred script included: a click on "Add column" before it runs is the form's
    # own submit, a reload that count() (which does not wait) catches half done.
    with page.expect_navigation(wait_until="load"):
        page.get_by_role("link", name="Compare side by side").click()
    page.get_by_label("Prompt").fill("Tell me slowly about tides")
    page.get_by_role("button", name="Add column").click()
    page.wait_for_function("() => document.querySelectorAll('[data-column]').length === 3")
    columns = page.locator("[data-column]")
    assert columns.count() == 3
    for index, agent in enumerate(["slow-poke", "slow-poke", "support-chat"]):
        columns.nth(index).get_by_label("Agent").fill(agent)
    columns.nth(1).get_by_label("Max tokens").fill("30")
    page.get_by_role("button", name="Run all").click()

    # The two slow columns write at the same time, each in its own log region.
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-column]')].slice(0, 2).every(c =>"
        " c.querySelector('[data-status]').textContent === 'Running'"
        " && c.querySelector('[role=log] .answer')?.textContent.trim())"
    )
    assert page.get_by_role("button", name="Run all").is_disabled()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-column] [data-status]')]"
        ".every(s => s.textContent === 'Completed')"
    )
    runs = orm(playground_runs)
    assert len(runs) == 3 and {run.status for run in runs} == {"completed"}
    assert {run.prompt for run in runs} == {"Tell me slowly about tides"}
    assert sorted(run.agent for run in runs) == ["slow-poke", "slow-poke", "support-chat"]
    assert {run.config.get("maxTokens") if run.config else None for run in runs} == {None, 30}
    for index in range(3):
        column = columns.nth(index)
        assert column.get_by_role("log").locator(".answer").text_content().strip()
        stats = column.locator("[data-stats]").text_content()
        assert " in / " in stats and "Run #" in stats
        for timing in ("[data-ttft]", "[data-duration]"):
            assert re.fullmatch(r"\d+ ms|\d+\.\d s", column.locator(timing).text_content())
    assert page.get_by_role("button", name="Run all").is_enabled()

    # The address holds the comparison; a column can be removed; Run all runs it again.
    query = parse_qs(urlsplit(page.url).query, keep_blank_values=True)
    assert query["agent"] == ["slow-poke", "slow-poke", "support-chat"]
    assert query["max_tokens"] == ["", "30", ""]
    columns.nth(0).get_by_role("button", name="Remove column 1").click()
    assert columns.count() == 2
    query = parse_qs(urlsplit(page.url).query, keep_blank_values=True)
    assert query["agent"] == ["slow-poke", "support-chat"]

    shared = browser.new_page()
    log_in(shared, live.url, "bob")
    shared.goto(page.url)
    assert shared.locator("[data-column]").count() == 2
    assert shared.get_by_label("Prompt").input_value() == "Tell me slowly about tides"
    shared.get_by_role("button", name="Run all").click()
    shared.wait_for_function(
        "() => [...document.querySelectorAll('[data-column] [data-status]')]"
        ".every(s => s.textContent === 'Completed')"
    )
    runs = orm(playground_runs)
    assert len(runs) == 5
    assert sorted(run.agent for run in runs[3:]) == ["slow-poke", "support-chat"]
    assert runs[3].config == {"maxTokens": 30} or runs[4].config == {"maxTokens": 30}


SIDEWAYS = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


def test_the_conversation_and_compare_pages_keep_the_sites_rules(live, browser):
    """Under the CSP, no serious axe problem, no sideways scroll at 390 px, light or dark:
    with a conversation, a streamed Markdown answer and a finished comparison on screen."""
    from axe_playwright_python.sync_playwright import Axe

    from tests.browsers import Watched

    watched = Watched(browser)
    page = watched.page
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, live.url, "bob")
    watched.visit(f"{live.url}/playground")
    page.get_by_label("Agent").fill("code-assistant")
    page.get_by_label("Prompt").fill("Check src/app.py with **care**")
    page.get_by_role("button", name="Run").click()
    page.locator("#output .turn-footer").wait_for()
    thread = orm(lambda: Run.objects.get().upstream_thread_id)
    compare = (
        f"{live.url}/playground/compare?prompt=Hi&agent=support-chat&max_tokens=&max_turns="
        "&temperature=&agent=deep-thinker&max_tokens=&max_turns=&temperature="
    )
    watched.visit(compare)
    page.get_by_role("button", name="Run all").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-column] [data-status]')]"
        ".every(s => s.textContent === 'Completed')"
    )
    problems: list[str] = []
    axe = Axe()

    def check(where: str) -> None:
        if page.evaluate(SIDEWAYS) > 0:
            problems.append(f"{where}: scrolls sideways")
        problems.extend(
            f"{where}: {v['id']} ({v['impact']})"
            for v in axe.run(page).response["violations"]
            if v["impact"] in ("serious", "critical")
        )

    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for width in (1280, 390):
            page.set_viewport_size({"width": width, "height": 900})
            check(f"the finished comparison at {width} px, {scheme}")
    for url in (f"{live.url}/playground?thread={thread}&agent=code-assistant", compare):
        watched.visit(url)
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            for width in (390, 1280):
                page.set_viewport_size({"width": width, "height": 900})
                check(f"{url} at {width} px, {scheme}")
    watched.settle()
    assert problems == []
    assert watched.violations == []
