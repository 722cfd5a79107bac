"""`python -m simulator --store FILE`: a restarted simulator knows what the last one made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from simulator.testing import SimulatorServer

ADMIN = "rt_test_admin"
MEMBER = "rt_test_member"


def api(sim: SimulatorServer, key: str = ADMIN, base: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=base or sim.url, headers={"X-API-Key": key}, timeout=10)


def state(sim: SimulatorServer) -> dict[str, Any]:
    """Everything a client can read back, but the request ids."""
    with api(sim) as admin, api(sim, base=sim.billing_url) as billing:
        thread_ids = [t["id"] for t in admin.get("/threads").json()["data"]]
        return {
            "threads": admin.get("/threads").json()["data"],
            "events": {t: admin.get(f"/threads/{t}").json()["data"] for t in thread_ids},
            "runs": admin.get("/run", params={"all": "true"}).json()["data"],
            "activity": admin.get("/activity").json()["data"],
            "ledger": billing.get("/billing/credits/history").json()["data"],
            "credits": billing.get("/billing/credits").json()["data"],
        }


def test_a_restarted_simulator_keeps_threads_runs_activity_and_credits(tmp_path: Path) -> None:
    store = tmp_path / "state" / "simulator.json"
    with SimulatorServer(keys=(ADMIN, MEMBER), store_path=store) as sim:
        with api(sim) as admin, api(sim, MEMBER) as member:
            first = admin.post("/run", json={"agent": "code-assistant", "prompt": "Run the tests"})
            thread_id = first.headers["x-thread-id"]
            body = {"agent": "code-assistant", "prompt": "Go on.", "threadId": thread_id}
            admin.post("/run", json={**body, "stream": False})
            member.post("/run", json={"agent": "support-chat", "prompt": "hi", "stream": False})
            registered = {"simulate": {"runStatus": "registered", "pendingLookups": 1}}
            pending = admin.post(
                "/run",
                json={"agent": "support-chat", "prompt": "later", "metadata": registered},
            ).headers["x-run-id"]
        before = state(sim)
    assert json.loads(store.read_text())["version"] == 1

    with SimulatorServer(keys=(ADMIN, MEMBER), store_path=store) as sim:
        assert state(sim) == before
        with api(sim) as admin:
            # The store kept where the registered run was: one more lookup running, then done.
            assert admin.get(f"/run/{pending}").json()["data"]["status"] == "running"
            assert admin.get(f"/run/{pending}").json()["data"]["status"] == "completed"
            # Counters go on from where they were: a new thread is the newest.
            newer = admin.post("/run", json={"agent": "support-chat", "prompt": "new"})
            threads = admin.get("/threads").json()["data"]
            assert threads[0]["id"] == newer.headers["x-thread-id"]
            assert [t["id"] for t in threads[1:]] == [t["id"] for t in before["threads"]]
            runs = admin.get("/run", params={"all": "true"}).json()["data"]
            assert runs[0]["id"] == newer.headers["x-run-id"]
            assert len(runs) == len(before["runs"]) + 1
            activity = admin.get("/activity", params={"limit": 1}).json()["data"]["events"]
            assert activity[0]["id"] == f"act_{len(before['activity']['events']) + 3:08d}"


def test_without_a_store_nothing_is_kept() -> None:
    with SimulatorServer(keys=(ADMIN,)) as sim, api(sim) as admin:
        admin.post("/run", json={"agent": "support-chat", "prompt": "hi", "stream": False})
    with SimulatorServer(keys=(ADMIN,)) as sim, api(sim) as admin:
        assert admin.get("/threads").json()["data"] == []
        assert admin.get("/run").json()["data"] == []
