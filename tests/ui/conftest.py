"""A live rtdash with the demo's history, and a browser logged in as demo, for the UI tests.

The history is `manage.py demo`'s own seed (real runs through a private simulator), written to
a simulator store that the live server's simulator then loads, so every thread page finds its
thread upstream, as after `make run`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from runs.experiments.create import create_experiment
from runs.experiments.runner import run_experiment
from runs.experiments.spec import parse_spec
from runs.models import (
    AlertAttempt,
    AlertDelivery,
    AlertDestination,
    AlertEvent,
    AlertRule,
    Experiment,
    Run,
    Team,
    Thread,
)
from simulator.testing import SimulatorServer
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.live import RtdashServer

DEMO_KEY = "rt_test_demo"
DEMO_RUNS = 24
TIMEOUT_MS = 20_000
WIDTHS = (390, 1280)
# Debug off, as in production (so the 404 page is rtdash's own), over plain HTTP on loopback.
PRODUCTION_LIKE = {
    "RTDASH_DEBUG": "0",
    "RTDASH_SECRET_KEY": "ui-tests-" + "k" * 50,
    "RTDASH_SSL_REDIRECT": "0",
    "RTDASH_SILENCED_CHECKS": "rtdash.E003",  # one worker: the in-process channel layer will do
}


@dataclass
class DemoSite:
    url: str
    pages: list[str]  # every page a person can open, by path

    def log(self) -> str:
        return self.server.log()

    server: RtdashServer | None = None


@pytest.fixture
def fast_passwords():
    """Overrides conftest's: the live server checks passwords with the production hashers."""


@pytest.fixture
def demo_site(tmp_path):
    store = tmp_path / "simulator.json"
    call_command("demo", runs=DEMO_RUNS, simulator_store=str(store))
    team = Team.objects.get(slug="demo")
    run = Run.objects.filter(team=team).order_by("-started_at").first()
    thread = Thread.objects.filter(team=team).order_by("-pk").first()
    with SimulatorServer(keys=(DEMO_KEY,), store_path=store) as simulator:
        experiment = _replayed_experiment(team, thread.upstream_id, simulator.url)
        _alert_history(team)
        pages = [
            "/", "/playground", "/playground/compare", "/runs/", f"/runs/{run.pk}/", "/threads/",
            f"/threads/{thread.upstream_id}/", "/reports?period=30d",
            "/reports?period=30d&group_by=day", "/reports/prices", "/reports/budgets",
            "/settings/", "/settings/audit/", "/experiments/",
            "/experiments/new/", f"/experiments/new/?thread={thread.upstream_id}",
            f"/experiments/{experiment.pk}/", "/accounting/reconciliation",
            "/accounting/reconciliation?period=30d", "/alerts/", "/settings/alerts/",
        ]  # fmt: skip
        with RtdashServer(
            simulator.url,
            TEST_ENCRYPTION_KEY,
            RUNTOOLS_BILLING_URL=simulator.billing_url,
            **PRODUCTION_LIKE,
        ) as server:
            yield DemoSite(url=server.url, pages=pages, server=server)


def _replayed_experiment(team: Team, thread_id: str, upstream_url: str) -> Experiment:
    """A finished experiment: the demo thread replayed against two variants, so its page has a
    full results table (the demo itself seeds none)."""
    spec = parse_spec(
        {
            "name": "Support chat vs code assistant, with a long name that has to wrap somewhere",
            "source": {"thread": thread_id},
            "variants": [
                {"agent": "support-chat", "config": {"maxTurns": 2}},
                {"agent": "code-assistant", "config": {"maxTurns": 4, "temperature": 0.2}},
            ],
        }
    )
    experiment = create_experiment(team, spec)
    previous = settings.RUNTOOLS_API_URL
    settings.RUNTOOLS_API_URL = upstream_url
    try:
        return asyncio.run(run_experiment(experiment.pk))
    finally:
        settings.RUNTOOLS_API_URL = previous


def _alert_history(team: Team) -> None:
    """A rule that fired, a webhook with a long address, and a delivery that failed once.

    The rule is disabled, so the live server's alert loop leaves this history as it is (and
    the webhook's address is on loopback, so nothing could leave the machine anyway)."""
    rule = AlertRule.objects.create(
        team=team, kind="error_rate", percent=20, window_minutes=60, firing=True, episode=1,
        last_value="33%", enabled=False,
    )  # fmt: skip
    webhook = AlertDestination.objects.create(
        team=team, kind="webhook", name="On-call channel",
        url="http://127.0.0.1:9/services/T0000000000/B0000000000/" + "x" * 48,
    )  # fmt: skip
    email = AlertDestination.objects.create(
        team=team, kind="email", name="Owners", roles="owner,admin"
    )
    event = AlertEvent.objects.create(
        team=team, rule=rule, episode=1, state="firing",
        summary="Error rate of every agent was 33% over the last 60 minutes (at least 20%)",
        value="33%",
    )  # fmt: skip
    now = timezone.now()
    for destination, status in ((webhook, "sent"), (email, "failed")):
        delivery = AlertDelivery.objects.create(
            event=event, destination=destination, status=status, attempts=2
        )
        AlertAttempt.objects.create(
            delivery=delivery, at=now, ok=False, response_code=502,
            error="The receiver answered 502 Bad Gateway after 10.0 s",
        )  # fmt: skip
        AlertAttempt.objects.create(delivery=delivery, at=now, ok=status == "sent")


def log_in(page, site: DemoSite) -> None:
    page.goto(f"{site.url}/login/")
    page.get_by_label("Username").fill("demo")
    page.get_by_label("Password").fill("demo")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{site.url}/")


def new_page(browser, site: DemoSite, *, width: int = 1280, dark: bool = False, login=True):
    context = browser.new_context(
        viewport={"width": width, "height": 900}, color_scheme="dark" if dark else "light"
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    if login:
        log_in(page, site)
    return page
