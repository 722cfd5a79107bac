"""The playground in a real Chromium against a real rtdash (daphne) and the simulator.

Log in, run a streamed prompt and watch it arrive, stop a slow run, reload mid-run, continue
a thread, run without streaming, see errors, and watch a teammate's run.
"""

from __future__ import annotations

import re

import pytest

from runs.models import Run
from tests.browsers import (
    answer_text,
    fill,
    latest_run,
    open_playground,
    orm,
    status,
    wait_for_answer,
)
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.live import RtdashServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fast_passwords():
    """Overrides conftest's: the live server checks passwords with the production hashers."""


@pytest.fixture
def live(upstream, acme_key, bob, alice):
    with RtdashServer(upstream.url, TEST_ENCRYPTION_KEY, RTDASH_REAPER_INTERVAL="0") as server:
        yield server


def runs() -> list[Run]:
    return list(Run.objects.order_by("pk"))


def test_a_streamed_prompt_appears_before_the_run_completes(live, browser):
    page = open_playground(browser, live)
    fill(page, "slow-poke", "Count to forty slowly please")
    page.get_by_role("button", name="Run").click()

    wait_for_answer(page)
    assert status(page).text_content() == "Running"
    partial = answer_text(page)
    assert orm(latest_run).status == "running"

    page.wait_for_function(
        "() => document.querySelector('#statusbar [data-status]').textContent === 'Completed'"
    )
    run = orm(latest_run)
    assert run.status == "completed" and run.source == "playground"
    assert answer_text(page) == run.result
    assert len(partial) < len(run.result)
    assert re.fullmatch(r"\d+ ms|\d+\.\d s", page.locator("#statusbar [data-ttft]").text_content())
    assert (
        f"{run.input_tokens} in / {run.output_tokens} out"
        in page.locator("#statusbar [data-tokens]").text_content()
    )
    assert page.url.endswith(f"/playground?run={run.pk}")
    footer = page.locator("#output .assistant-turn .turn-footer")
    footer.wait_for()
    assert "Completed" in footer.text_content()
    assert f"{run.input_tokens} in / {run.output_tokens} out" in footer.text_content()
    assert re.search(r"first token \d+ ms", footer.text_content())
    assert "duration" in footer.text_content()
    assert (
        footer.get_by_role("link", name=f"Run #{run.pk}")
        .get_attribute("href")
        .rstrip("/")
        .endswith(f"/runs/{run.pk}")
    )
    # The answer is in the transcript once; the result card would only repeat it.
    assert page.locator("#result-card").count() == 0


def test_stop_a_slow_run(live, browser):
    page = open_playground(browser, live)
    fill(page, "slow-poke", "Go on and on", simulate={"dripMs": 100})
    page.get_by_role("button", name="Run").click()
    wait_for_answer(page)
    page.get_by_role("button", name="Stop").click()

    page.wait_for_function(
        "() => document.querySelector('#statusbar [data-status]').textContent === 'Cancelled'"
    )
    run = orm(latest_run)
    assert run.status == "cancelled" and run.cancel_requested
    assert 0 < len(answer_text(page).split()) < 40
    # A Stop the person asked for is said plainly, once, and not as an error.
    said = page.locator("#output .turn-problem")
    said.wait_for()
    assert said.text_content() == "You stopped the run."
    assert said.get_attribute("class") == "notice turn-problem"
    assert page.locator(".problem:visible").count() == 0
    assert page.get_by_role("button", name="Run").is_enabled()
    assert page.get_by_role("button", name="Stop").is_disabled()


def test_reload_mid_run_and_see_it_finish(live, browser):
    page = open_playground(browser, live)
    fill(page, "slow-poke", "Keep going after a reload", simulate={"dripMs": 80})
    page.get_by_role("button", name="Run").click()
    wait_for_answer(page)
    page.reload()

    assert re.search(r"/playground\?run=\d+$", page.url)
    page.wait_for_function(
        "() => document.querySelector('#statusbar [data-status]').textContent === 'Completed'"
    )
    run = orm(latest_run)
    assert run.status == "completed"
    # Replayed from the database, then live: every word once.
    assert answer_text(page) == run.result
    assert page.get_by_label("Prompt").input_value() == "Keep going after a reload"


def test_a_teammate_watches_the_same_run_live(live, browser):
    page = open_playground(browser, live, "bob")
    # About 8 s of deltas: long enough for the teammate's browser to log in and join while it
    # runs, even on a loaded machine.
    fill(page, "slow-poke", "Watch me", simulate={"dripMs": 100, "deltas": 80})
    page.get_by_role("button", name="Run").click()
    wait_for_answer(page)
    run = orm(latest_run)

    teammate = open_playground(browser, live, "alice")
    teammate.goto(f"{live.url}/playground?run={run.pk}")
    wait_for_answer(teammate)
    assert status(teammate).text_content() == "Running"
    teammate.wait_for_function(
        "() => document.querySelector('#statusbar [data-status]').textContent === 'Completed'"
    )
    page.wait_for_function(
        "() => document.querySelector('#statusbar [data-status]').textContent === 'Completed'"
    )
    result = orm(latest_run).result
    assert answer_text(teammate) == answer_text(page) == result


def wait_for_footers(page, count: int) -> None:
    page.wait_for_function(
        f"() => document.querySelectorAll('#output .turn-footer').length === {count}"
    )


def test_a_second_prompt_continues_the_conversation_in_one_thread(live, browser):
    page = open_playground(browser, live)
    fill(page, "support-chat", "My invoice is wrong")
    page.get_by_role("button", name="Run").click()
    wait_for_footers(page, 1)
    assert page.get_by_label("Prompt").input_value() == ""

    page.get_by_label("Prompt").fill("And the refund?")
    page.get_by_label("Prompt").press("Control+Enter")
    wait_for_footers(page, 2)
    first, second = orm(runs)
    assert second.upstream_thread_id == first.upstream_thread_id
    assert second.prompt == "And the refund?"
    assert "Reply 2 in this thread" in second.result

    # Both turns on screen, in order, in the page's log region.
    log = page.get_by_role("log")
    users = log.locator(".user-turn .turn-text").all_text_contents()
    answers = log.locator(".assistant-turn .answer").all_text_contents()
    assert users == ["My invoice is wrong", "And the refund?"]
    assert [text.strip() for text in answers] == [first.result, second.result]

    # Loading the thread's address shows the same conversation, drawn by the server.
    page.goto(f"{live.url}/playground?thread={first.upstream_thread_id}&agent=support-chat")
    log = page.get_by_role("log")
    assert log.locator(".user-turn .turn-text").all_text_contents() == users
    assert log.locator(".assistant-turn .turn-footer").count() == 2
    page.get_by_label("Prompt").fill("Third?")
    page.get_by_role("button", name="Run").click()
    wait_for_footers(page, 3)
    assert orm(latest_run).upstream_thread_id == first.upstream_thread_id

    # "New conversation" starts fresh.
    page.get_by_role("link", name="New conversation").click()
    assert log.locator(".turn").count() == 0
    page.get_by_label("Prompt").fill("Hello again")
    page.get_by_role("button", name="Run").click()
    wait_for_footers(page, 1)
    assert orm(latest_run).upstream_thread_id != first.upstream_thread_id


def test_edit_and_resend_forks_the_conversation(live, browser):
    page = open_playground(browser, live)
    fill(page, "support-chat", "First question")
    page.get_by_role("button", name="Run").click()
    wait_for_footers(page, 1)
    page.get_by_label("Prompt").fill("Second question")
    page.get_by_role("button", name="Run").click()
    wait_for_footers(page, 2)
    first, second = orm(runs)

    page.locator(".user-turn").nth(1).get_by_role("button", name="Edit and resend").click()
    page.get_by_label("Edited prompt").fill("Second question, edited")
    page.get_by_role("button", name="Send edited prompt").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#output .turn-footer').length === 2"
        " && document.querySelector('#output .user-turn:nth-of-type(3)')"
        "?.textContent.includes('edited')"
    )
    wait_for_footers(page, 2)
    page.wait_for_function("() => !document.querySelector('#run-button').disabled")
    fork = orm(latest_run)
    assert fork.pk != second.pk
    assert fork.upstream_thread_id and fork.upstream_thread_id != first.upstream_thread_id
    assert fork.messages == [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": first.result},
        {"role": "user", "content": "Second question, edited"},
    ]
    users = page.locator("#output .user-turn .turn-text").all_text_contents()
    assert users == ["First question", "Second question, edited"]

    # The next prompt follows the fork's thread.
    page.get_by_label("Prompt").fill("After the fork")
    page.get_by_role("button", name="Run").click()
    wait_for_footers(page, 3)
    assert orm(latest_run).upstream_thread_id == fork.upstream_thread_id

    # Regenerate the last answer: the same prompt, forked again.
    answered = orm(latest_run).pk
    page.locator(".assistant-turn").last.get_by_role("button", name="Regenerate").click()
    page.wait_for_function(
        f"() => document.querySelector('#output .assistant-turn:last-child')?.dataset.run"
        f" && document.querySelector('#output .assistant-turn:last-child').dataset.run"
        f" !== '{answered}'"
    )
    again = orm(latest_run)
    assert again.messages[-1] == {"role": "user", "content": "After the fork"}
    assert page.locator("#output .user-turn").count() == 3


def test_markup_in_an_answer_is_shown_inert(live, browser):
    page = open_playground(browser, live)
    # support-chat quotes the prompt's first words back in its answer.
    hostile = '<img src="x" onerror="window.pwned=1"> **bold**'
    fill(page, "support-chat", hostile)
    page.get_by_role("button", name="Run").click()
    wait_for_footers(page, 1)
    answer = page.locator("#output .assistant-turn .answer")
    assert '<img src="x" onerror="window.pwned=1">' in answer.text_content()
    assert answer.locator("img").count() == 0
    assert answer.locator("strong").text_content() == "bold"
    assert page.evaluate("() => window.pwned") is None

    # Drawn by the server from the record, the same.
    run = orm(latest_run)
    page.goto(f"{live.url}/playground?thread={run.upstream_thread_id}&agent=support-chat")
    answer = page.locator("#output .assistant-turn .answer")
    assert '<img src="x" onerror="window.pwned=1">' in answer.text_content()
    assert answer.locator("img").count() == 0
    assert answer.locator("strong").text_content() == "bold"
    assert page.evaluate("() => window.pwned") is None


def test_run_with_stream_off(live, browser):
    page = open_playground(browser, live)
    fill(page, "code-assistant", "Run the tests and summarize failures.")
    page.get_by_label("Stream").uncheck()
    page.get_by_role("button", name="Run").click()

    card = page.locator("#result-card")
    card.wait_for()
    run = orm(latest_run)
    assert run.stream is False and run.status == "completed"
    assert card.get_attribute("data-status") == "completed"
    assert run.result in card.text_content()
    assert status(page).text_content() == "Completed"
    assert page.locator("#output .tool-card").count() == 0


def test_tool_calls_thinking_and_unknown_frames_are_drawn(live, browser):
    page = open_playground(browser, live)
    fill(page, "code-assistant", "Check src/app.py", simulate={"unknownFrames": True})
    page.get_by_role("button", name="Run").click()
    wait_for_footers(page, 1)
    cards = page.locator("#output .tool-card")
    assert cards.count() == 2
    assert "src/app.py" in cards.nth(0).locator(".tool-input").text_content()
    assert cards.nth(1).locator("header").text_content().startswith("run_tests")
    assert cards.nth(1).locator(".tool-output").text_content()
    raw = page.locator("#raw-events")
    assert raw.is_visible()
    assert "sandbox_status" in raw.text_content() and "x_custom_metric" in raw.text_content()

    fill(page, "deep-thinker", "Why is the sky blue?")
    page.get_by_role("button", name="Run").click()
    page.locator("#output details.thinking").wait_for()
    wait_for_footers(page, 2)
    assert page.locator("#output .thinking-text").text_content()
    # Another agent: a new thread, not the code assistant's.
    first, second = orm(runs)
    assert second.upstream_thread_id != first.upstream_thread_id


@pytest.mark.parametrize(
    ("simulate", "shown", "label"),
    [
        ({"status": 429}, "RunTools answered 429", "Failed"),
        ({"cutAfter": 3}, "The RunTools stream ended before its final frame", "Interrupted"),
        ({"errorAfter": 2}, "simulated provider failure", "Failed"),
    ],
)
def test_upstream_errors_are_shown_clearly(live, browser, simulate, shown, label):
    page = open_playground(browser, live)
    fill(page, "support-chat", "Hello", simulate=simulate)
    page.get_by_role("button", name="Run").click()
    problem = page.locator("#output .turn-problem")
    problem.wait_for()
    page.wait_for_function(
        f"() => document.querySelector('#statusbar [data-status]').textContent === '{label}'"
    )
    assert shown in problem.text_content()
    assert page.locator(".problem:visible").count() == 1  # said once, in place
    assert page.get_by_role("button", name="Run").is_enabled()


def test_the_form_checks_ranges_before_sending(live, browser):
    page = open_playground(browser, live)
    fill(page, "support-chat", "Hello")
    page.get_by_text("Config and metadata").click()
    page.get_by_label("Temperature").fill("3")
    page.get_by_label("Max tokens").fill("0")
    page.get_by_role("button", name="Run").click()
    problems = page.locator("#form-problems")
    problems.wait_for()
    assert "Temperature: a number from 0 to 2." in problems.text_content()
    assert "Max tokens: a whole number from 1 to 128,000." in problems.text_content()
    assert orm(latest_run) is None


def test_view_code_uses_the_token_variable(live, browser):
    page = open_playground(browser, live)
    fill(page, "support-chat", "Hello there")
    page.get_by_text("View code").click()
    curl = page.locator("[data-code=curl]")
    curl.wait_for()
    assert f"curl -N {live.url}/v1/run" in curl.text_content()
    assert "$RTDASH_TOKEN" in curl.text_content()
    assert '"prompt": "Hello there"' in curl.text_content()
    assert "rt_test_demo" not in page.content()
    for language in ("curl", "Python", "JavaScript"):
        assert page.get_by_role("button", name=f"Copy the {language} code").is_visible()
    python = page.locator("[data-code=python]").text_content()
    assert "httpx" in python and "json=" in python
    assert "getReader()" in page.locator("[data-code=javascript]").text_content()


@pytest.mark.usefixtures("upstream", "acme_key", "bob", "alice")
def test_stop_on_one_worker_stops_the_reader_on_another(browser, private_redis, upstream):
    env = {"RTDASH_REAPER_INTERVAL": "0", "REDIS_URL": private_redis.url}
    with (
        RtdashServer(upstream.url, TEST_ENCRYPTION_KEY, **env) as first,
        RtdashServer(upstream.url, TEST_ENCRYPTION_KEY, **env) as second,
    ):
        page = open_playground(browser, first, "bob")
        long = {"deltas": 300, "dripMs": 100}  # 30 s unless stopped
        fill(page, "support-chat", "Read on the first worker", simulate=long)
        page.get_by_role("button", name="Run").click()
        wait_for_answer(page)
        run = orm(latest_run)

        # A teammate on the second worker watches the run live and stops it there.
        other = open_playground(browser, second, "alice")
        other.goto(f"{second.url}/playground?run={run.pk}")
        wait_for_answer(other)
        assert status(other).text_content() == "Running"
        other.get_by_role("button", name="Stop").click()

        for tab in (other, page):
            tab.wait_for_function(
                "() => document.querySelector('#statusbar [data-status]')"
                ".textContent === 'Cancelled'"
            )
        run = orm(latest_run)
        assert run.status == "cancelled" and run.cancel_requested
        assert answer_text(other) == answer_text(page) == run.result
        assert 0 < run.frame_count < 300
