"""`--store PATH`: the simulator's state in a JSON file, loaded at start and saved on change.

So a simulator restarted by `make run` still knows the threads (and runs, activity and ledger)
that an earlier one made, such as the demo's seeded threads.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .agents import Agent, find_agent
from .records import ActivityEvent, LedgerEntry, RunRecord
from .store import Event, KeyStore, Thread

if TYPE_CHECKING:
    from .app import SimulatorApp

VERSION = 1


def _thread_json(thread: Thread) -> dict[str, Any]:
    return {
        "id": thread.id,
        "agent": thread.agent.slug,
        "title": thread.title,
        "createdAt": thread.created_at,
        "updatedAt": thread.updated_at,
        "touched": thread.touched,
        "archived": thread.archived,
        "sandboxId": thread.sandbox_id,
        "events": [e.to_json() for e in thread.events],
    }


def _run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "key": run.key,
        "userId": run.user_id,
        "agent": run.agent.slug,
        "threadId": run.thread_id,
        "sandboxId": run.sandbox_id,
        "createdAt": run.created_at,
        "output": run.output,
        "usage": run.usage,
        "iterations": run.iterations,
        "tools": list(run.tools),
        "status": run.status,
        "completedAt": run.completed_at,
        "pendingLookups": run.pending_lookups,
        "costCents": run.cost_cents,
        "order": run.order,
    }


def dump(app: SimulatorApp) -> dict[str, Any]:
    records = app.records
    return {
        "version": VERSION,
        "keys": {
            key: {
                "clock": store.clock,
                "threads": [_thread_json(t) for t in store.threads.values()],
            }
            for key, store in app.store.items()
            if store.threads  # e.g. the empty key of /healthz's requests: nothing to keep
        },
        "runs": [_run_json(r) for r in records.runs.values()],
        "activity": [vars(e) for e in records.activity],
        "ledger": [vars(e) for e in records.ledger],
        "totals": {
            "grantedCents": records.total_granted_cents,
            "usedCents": records.total_used_cents,
        },
    }


def save(app: SimulatorApp, path: Path) -> None:
    """Write atomically: a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(dump(app), handle, separators=(",", ":"), ensure_ascii=False)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _agent(slug: str) -> Agent:
    agent = find_agent(slug)
    if agent is None:
        raise ValueError(f"the simulator store names an unknown agent {slug!r}")
    return agent


def _thread(raw: dict[str, Any]) -> Thread:
    return Thread(
        id=raw["id"],
        agent=_agent(raw["agent"]),
        title=raw["title"],
        created_at=raw["createdAt"],
        updated_at=raw["updatedAt"],
        touched=raw["touched"],
        archived=raw["archived"],
        sandbox_id=raw["sandboxId"],
        events=[
            Event(e["sequence"], e["threadId"], e["runId"], e["type"], e["payload"], e["createdAt"])
            for e in raw["events"]
        ],
    )


def _run(raw: dict[str, Any]) -> RunRecord:
    return RunRecord(
        id=raw["id"],
        key=raw["key"],
        user_id=raw["userId"],
        agent=_agent(raw["agent"]),
        thread_id=raw["threadId"],
        sandbox_id=raw["sandboxId"],
        created_at=raw["createdAt"],
        output=raw["output"],
        usage=raw["usage"],
        iterations=raw["iterations"],
        tools=tuple(raw["tools"]),
        status=raw["status"],
        completed_at=raw["completedAt"],
        pending_lookups=raw["pendingLookups"],
        cost_cents=raw["costCents"],
        order=raw["order"],
    )


def load(app: SimulatorApp, path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("version") != VERSION:
        raise ValueError(f"{path} is not a version {VERSION} simulator store")
    for key, raw in data["keys"].items():
        store = KeyStore()
        store.clock = raw["clock"]
        store.threads = {t["id"]: _thread(t) for t in raw["threads"]}
        app.store.put(key, store)
    records = app.records
    records.runs = {r["id"]: _run(r) for r in data["runs"]}
    records.activity = [ActivityEvent(**e) for e in data["activity"]]
    records.ledger = [LedgerEntry(**e) for e in data["ledger"]]
    records.total_granted_cents = data["totals"]["grantedCents"]
    records.total_used_cents = data["totals"]["usedCents"]
    records.resume_clock()
