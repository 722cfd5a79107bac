"""Issue 15: the simulator `make run` starts knows every thread the demo seeded.

The demo seeds through a private simulator with `--store FILE`; a later simulator started on
the same file (as `make run`'s is) must answer `GET /v1/threads/{id}` for each seeded thread
with the user and assistant messages of the runs rtdash recorded in it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from django.core.management import call_command

from runs.models import Run, RunStatus, Team, Thread
from simulator.testing import SimulatorServer

pytestmark = pytest.mark.django_db(transaction=True)

DEMO_KEY = "rt_test_demo"


def assert_simulator_knows_the_demo_threads(store: Path) -> int:
    team = Team.objects.get(slug="demo")
    threads = list(Thread.objects.filter(team=team))
    assert len(threads) >= 5
    with (
        SimulatorServer(keys=(DEMO_KEY,), store_path=store) as sim,
        httpx.Client(base_url=sim.url, headers={"X-API-Key": DEMO_KEY}, timeout=10) as api,
    ):
        for thread in threads:
            response = api.get(f"/threads/{thread.upstream_id}")
            assert response.status_code == 200, (thread.upstream_id, response.text)
            events = response.json()["data"]["events"]
            said = [(e["type"], e["payload"]["content"]) for e in events if "message" in e["type"]]
            runs = Run.objects.filter(team=team, upstream_thread_id=thread.upstream_id)
            expected = []
            # A run the upstream refused (a simulated 429 or 500) never reached the thread.
            for run in runs.filter(http_status=200).order_by("started_at", "pk"):
                expected.append(("user_message", run.prompt))
                if run.status == RunStatus.COMPLETED:
                    expected.append(("assistant_message", run.result))
            detail = [(r.prompt, r.status, r.http_status, r.error_code, r.stream) for r in runs]
            assert said == expected, detail
            # The agent-scoped helper the thread pages may use answers too.
            scoped = api.get(f"/run/threads/{thread.upstream_id}", params={"agent": thread.agent})
            assert scoped.status_code == 200
    return len(threads)


def test_the_demos_threads_are_kept_in_the_simulators_store(tmp_path: Path) -> None:
    store = tmp_path / "simulator-store.json"
    call_command("demo", runs=40, simulator_store=str(store))
    assert store.exists()
    team = Team.objects.get(slug="demo")
    # Some seeded threads have follow-ups, so more than one turn is checked.
    assert Run.objects.filter(team=team).exclude(upstream_thread_id="").count() > len(
        Thread.objects.filter(team=team)
    )
    assert_simulator_knows_the_demo_threads(store)


def test_a_history_seeded_without_a_store_has_its_threads_replayed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("demo", runs=30)  # no store: as every demo seeded before issue 15
    store = tmp_path / "simulator-store.json"
    call_command("demo", runs=30, simulator_store=str(store))
    count = assert_simulator_knows_the_demo_threads(store)
    assert f"Replayed {count} threads" in capsys.readouterr().out

    call_command("demo", runs=30, simulator_store=str(store))  # nothing left to replay
    assert "Replayed" not in capsys.readouterr().out
