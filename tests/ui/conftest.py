"""A live rtdash with the demo's history, and a browser logged in as demo, for the UI tests.

The history is `manage.py demo`'s own seed (real runs through a private simulator), written to
a simulator store that the live server's simulator then loads, so every thread page finds its
thread upstream, as after `make run`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.core.management import call_command

from runs.models import Run, Team, Thread
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
    pages = [
        "/", "/playground", "/runs/", f"/runs/{run.pk}/", "/threads/",
        f"/threads/{thread.upstream_id}/", "/reports?period=30d",
        "/reports?period=30d&group_by=day", "/reports/prices", "/reports/budgets",
        "/settings/", "/settings/audit/",
    ]  # fmt: skip
    with (
        SimulatorServer(keys=(DEMO_KEY,), store_path=store) as simulator,
        RtdashServer(simulator.url, TEST_ENCRYPTION_KEY, **PRODUCTION_LIKE) as server,
    ):
        yield DemoSite(url=server.url, pages=pages, server=server)


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
