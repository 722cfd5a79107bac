"""After `make run`'s seeding, every demo thread opens whole in a real Chromium.

`make run` (the Makefile's `run` target, then scripts/run.sh) is reproduced step by step, each
in a process of its own as there: `manage.py demo --simulator-store STORE` with
`RUNTOOLS_API_URL` pointing at the simulator's port, then `python -m simulator --store STORE`
on that port with its default keys, then rtdash pointed at it. Every thread the seed recorded
is then opened: RunTools must know it (no "RunTools has no thread with this id"), and the page
must show one turn per recorded run, each with its user message and, for a completed run, its
answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from runs.history.threads import THREAD_PAGE_SIZE
from runs.models import Run, Team, Thread
from simulator.testing import HOST, free_port
from tests import live
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.live import PROJECT_ROOT, RtdashServer
from tests.ui.conftest import PRODUCTION_LIKE, DemoSite, new_page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Enough runs for follow-ups: a good share of the threads get two turns or more.
SEEDED_RUNS = 60
NO_THREAD = "RunTools has no thread with this id"


@dataclass
class RecordedTurn:
    run_id: int
    completed: bool
    answer: str


def _environment(**extra: str) -> dict[str, str]:
    """A developer's shell: no simulator keys or store of their own; the test's database."""
    env = {k: v for k, v in os.environ.items() if k not in ("SIM_API_KEYS", "SIM_ADMIN_KEYS")}
    env.pop("SIM_STORE", None)
    return {
        **env,
        "DATABASE_URL": live.test_database_url(),
        "RTDASH_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        **extra,
    }


def _seed_as_make_run(store: Path, sim_port: int) -> None:
    """The Makefile's `run` target: `RUNTOOLS_API_URL=… manage.py demo --simulator-store …`."""
    env = _environment(RUNTOOLS_API_URL=f"http://{HOST}:{sim_port}/v1")
    command = [sys.executable, "manage.py", "demo", "--runs", str(SEEDED_RUNS)]
    seeded = subprocess.run(
        [*command, "--simulator-store", str(store)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    assert f"Seeded {SEEDED_RUNS} runs." in seeded.stdout


@contextmanager
def _simulator_as_run_sh(store: Path, port: int) -> Iterator[str]:
    """scripts/run.sh's simulator: `python -m simulator --host … --port … --store …`, with no
    `--keys` (its default key is the one the demo stored). Yields its API base URL."""
    log = (store.parent / "simulator.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--host", HOST, "--port", str(port),
         "--store", str(store)],
        cwd=PROJECT_ROOT,
        env=_environment(),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_for(f"http://{HOST}:{port}/healthz", process)
        yield f"http://{HOST}:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_for(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "the simulator exited"
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise AssertionError(f"no answer on {url}")


def _recorded_threads() -> dict[str, dict[str, RecordedTurn]]:
    """Every demo thread's recorded runs, by the run link's text ("run 12"). Read before the
    browser starts: Playwright's sync API keeps an event loop in this thread, beside which
    Django refuses ORM calls."""
    team = Team.objects.get(slug="demo")
    threads = {}
    for thread in Thread.objects.filter(team=team, deleted_at__isnull=True):
        runs = Run.objects.filter(team=team, upstream_thread_id=thread.upstream_id)
        threads[thread.upstream_id] = {
            f"run {run.pk}": RecordedTurn(run.pk, run.status == "completed", run.result or "")
            for run in runs
        }
    return threads


@dataclass
class Seeded:
    store: Path
    sim_port: int
    threads: dict[str, dict[str, RecordedTurn]]


@pytest.fixture
def seeded(tmp_path) -> Seeded:
    """`make run`'s seed, and what it recorded (before the browser: see _recorded_threads)."""
    store = tmp_path / "simulator-store.json"
    sim_port = free_port()
    _seed_as_make_run(store, sim_port)
    return Seeded(store, sim_port, _recorded_threads())


def test_every_demo_thread_opens_whole_after_make_runs_seeding(seeded, browser):
    threads = seeded.threads
    assert 5 <= len(threads) < THREAD_PAGE_SIZE
    assert any(len(turns) >= 2 for turns in threads.values()), "no thread was continued"

    with (
        _simulator_as_run_sh(seeded.store, seeded.sim_port) as simulator_url,
        RtdashServer(simulator_url, TEST_ENCRYPTION_KEY, **PRODUCTION_LIKE) as server,
    ):
        page = new_page(browser, DemoSite(url=server.url, pages=[]))
        # The threads list links every one of them (fewer than a page of threads).
        assert page.goto(f"{server.url}/threads/").status == 200
        listed = page.locator("table.threads a[href^='/threads/thr_']").evaluate_all(
            "(links) => links.map((link) => link.getAttribute('href'))"
        )
        assert sorted(listed) == sorted(f"/threads/{thread_id}/" for thread_id in threads)
        problems = []
        for thread_id, recorded in threads.items():
            problems += _check_thread(page, server, thread_id, recorded)
        page.context.close()
    assert problems == [], "\n".join(problems)


def _check_thread(page, server, thread_id: str, recorded: dict[str, RecordedTurn]) -> list[str]:
    """What is missing from the thread's page, in words (nothing: it opened whole)."""
    response = page.goto(f"{server.url}/threads/{thread_id}/")
    assert response is not None and response.status == 200, (thread_id, server.log()[-2000:])
    problems = []
    if NO_THREAD in page.content():
        problems.append(f"{thread_id}: {NO_THREAD}")
    elif page.locator(".upstream-problem").count():
        problems.append(f"{thread_id}: {page.locator('.upstream-problem').inner_text()}")
    turns = page.locator("ol.turns > li.turn")
    if turns.count() != len(recorded):
        problems.append(f"{thread_id}: {turns.count()} turns on the page, {len(recorded)} runs")
    if page.locator("ol.turns > li.turn.outside").count():
        problems.append(f"{thread_id}: turns RunTools has that rtdash did not record")
    for index in range(turns.count()):
        turn = turns.nth(index)
        link = turn.locator(".turn-head a").first.inner_text()
        run = recorded.get(link)
        if run is None:
            problems.append(f"{thread_id}: turn {index + 1} links {link!r}, not one of its runs")
            continue
        if turn.locator(".msg.user .text").count() != 1:
            problems.append(f"{thread_id}: {link} has no user message")
        answer = turn.locator(".msg.assistant .text")
        if run.completed and (answer.count() != 1 or answer.inner_text() != run.answer):
            problems.append(f"{thread_id}: {link} does not show its recorded answer")
    return problems
