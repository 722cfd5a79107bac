"""A real browser against a real rtdash: an owner sets up a webhook and a rule on the alert
settings page, the alert reaches a real receiver signed with the secret the page showed once,
and the alerts page shows the delivery."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from datetime import date
from decimal import Decimal

import httpx
import pytest
from django.db import connection

from runs.models import Price, Run
from runs.operations.delivery import SIGNATURE_HEADER, alerts_round
from tests.conftest import PASSWORD, TEST_ENCRYPTION_KEY
from tests.live import RtdashServer
from tests.operations.helpers import Receiver

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fast_passwords():
    """Overrides conftest's: the live server checks passwords with the production hashers."""


@pytest.fixture
def live(upstream, acme_key):
    with RtdashServer(upstream.url, TEST_ENCRYPTION_KEY) as server:
        yield server


@pytest.fixture
def spent(live, acme, alice, acme_token) -> None:
    """A priced run through the live gateway, recorded before the browser starts (Playwright's
    sync API runs an event loop in this thread, and Django refuses ORM calls next to one)."""
    Price.objects.create(
        team=acme,
        effective_from=date(2000, 1, 1),
        input_per_million=Decimal(1000),
        output_per_million=Decimal(1000),
    )
    body = {"agent": "code-assistant", "prompt": "Spend a little", "stream": False}
    headers = {"X-API-Key": acme_token[1]}
    assert httpx.post(live.url + "/v1/run", json=body, headers=headers, timeout=30).is_success
    deadline = time.monotonic() + 20
    while Run.objects.filter(status="running").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def _round_elsewhere() -> None:
    """`manage.py alerts`' round, on a thread of its own (see `spent`)."""

    def work() -> None:
        try:
            alerts_round()
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)


@pytest.mark.usefixtures("spent")
def test_an_owner_sets_up_a_webhook_alert_that_arrives_signed(live, browser):
    page = browser.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text))

    page.goto(f"{live.url}/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/")
    page.goto(f"{live.url}/settings/")
    page.click("text=Alert rules")
    page.wait_for_url(f"{live.url}/settings/alerts/")

    with Receiver() as receiver:
        destinations = page.locator("#destinations form.subform")
        destinations.locator("select[name=kind]").select_option("webhook")
        destinations.locator("input[name=name]").fill("ops channel")
        destinations.locator("input[name=url]").fill(receiver.url)
        destinations.locator("button[type=submit]").click()
        secret = page.locator("#new-secret").input_value()
        assert secret.startswith("whsec_")

        rules = page.locator("#rules form.subform")
        rules.locator("select[name=kind]").select_option("hourly_cost")
        rules.locator("input[name=amount]").fill("0.01")
        rules.locator("button[type=submit]").click()
        page.wait_for_url(f"{live.url}/settings/alerts/")
        assert "cost in the last hour over $0.01" in page.content()
        assert secret not in page.content()  # shown once

        _round_elsewhere()
        assert len(receiver.requests) == 1
        headers, body = receiver.requests[0]

    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
    page.click("text=Alerts sent")
    page.wait_for_url(f"{live.url}/alerts/")
    assert "ops channel: sent" in page.locator("table").inner_text()
    assert not [text for text in problems if "Content Security Policy" in text]
