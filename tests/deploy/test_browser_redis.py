"""Redis stops while a person uses the playground, then comes back: a real Chromium against a
real rtdash (daphne, REDIS_URL set) and a private redis-server killed and started again."""

from __future__ import annotations

import pytest

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

NOTICE = "#live-notice"


@pytest.fixture
def fast_passwords():
    """Overrides conftest's: the live server checks passwords with the production hashers."""


@pytest.mark.usefixtures("acme_key", "bob")
def test_the_notice_appears_while_redis_is_down_and_goes_when_it_returns(
    browser, private_redis, upstream
):
    env = {"RTDASH_REAPER_INTERVAL": "0", "REDIS_URL": private_redis.url}
    with RtdashServer(upstream.url, TEST_ENCRYPTION_KEY, **env) as live:
        page = open_playground(browser, live, "bob")
        private_redis.kill()

        # 300 deltas 50 ms apart: about 15 s, so it is still going when Redis is back.
        fill(page, "support-chat", "Run while Redis is down", {"deltas": 300, "dripMs": 50})
        page.get_by_role("button", name="Run").click()
        notice = page.locator(NOTICE)
        link = notice.get_by_role("link")
        link.wait_for()  # the notice names the run once it has started
        assert "Live streaming is unavailable" in notice.text_content()
        run = orm(latest_run)
        assert link.text_content() == f"Run #{run.pk}"
        assert link.get_attribute("href") == f"/runs/{run.pk}/"
        assert run.status == "running"  # started and recorded without the channel layer

        private_redis.start()  # same port: the page's next try follows the run live again
        notice.wait_for(state="hidden")
        assert orm(latest_run).status == "running"  # back before the end: live again
        wait_for_answer(page)
        page.wait_for_function(
            "() => document.querySelector('#statusbar [data-status]').textContent === 'Completed'"
        )
        assert status(page).text_content() == "Completed"
        run = orm(latest_run)
        assert answer_text(page) == run.result
