"""A realistic history for the demo, made by really running agents against the simulator.

Every run goes through the same path as a gateway or playground run (start_run → upstream →
RunReader or the JSON outcome → finish_run), so every number on the dashboard is real. Only
the timestamps are spread over the last 30 days afterwards, and the daily rollup rebuilt.
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from runs.core.validation import validate_run
from runs.models import GatewayToken, Run, RunEvent, Source, Team, Thread
from runs.pipeline.recording import rebuild_usage
from runs.pipeline.start import launch

PROMPTS = {
    "code-assistant": [
        "Run the tests and summarize failures.",
        "Why does tests/test_billing.py fail on CI but not locally?",
        "Refactor src/export.py to stream rows instead of loading them all.",
        "Add type hints to app/models.py and fix what mypy finds.",
    ],
    "support-chat": [
        "A customer cannot reset their password. What should I tell them?",
        "Draft a friendly reply about the delayed shipment.",
        "Summarize this week's top three support themes.",
    ],
    "deep-thinker": [
        "Should we shard the orders table now or next quarter?",
        "Compare three ways to price the new API tier.",
    ],
    "slow-poke": ["Walk me through the deploy checklist slowly."],
}
FOLLOW_UPS = [
    "Go on.",
    "Can you make it shorter?",
    "What would you do next?",
    "Thanks — and the edge cases?",
]
FAULTS = [
    {"status": 429, "retryAfter": 3},
    {"status": 500},
    {"status": 502},
    {"cutAfter": 4},
    {"errorAfter": 3},
]


async def _execute(team: Team, body: dict, *, user=None, token=None, source: str) -> Run:
    raw = json.dumps(body).encode()
    started = await launch(team, validate_run(body, raw), source=source, user=user, token=token)
    if started.reader is not None:
        await started.reader.task
    return await Run.objects.aget(pk=started.run.pk)


def _spread_back(run: Run, when) -> None:
    """Move a finished run (and its frames) to `when`, keeping its durations."""
    shift = when - run.started_at
    Run.objects.filter(pk=run.pk).update(
        started_at=when,
        finished_at=run.finished_at + shift if run.finished_at else None,
        first_byte_at=run.first_byte_at + shift if run.first_byte_at else None,
    )
    for event in RunEvent.objects.filter(run=run).only("pk", "created_at"):
        RunEvent.objects.filter(pk=event.pk).update(created_at=event.created_at + shift)


async def seed(team: Team, users: list, tokens: list[GatewayToken], count: int, seed_value=7):
    """Run `count` agent runs for `team` and spread them over the last 30 days."""
    rng = random.Random(seed_value)
    now = timezone.now()
    threads: list[tuple[str, str]] = []  # (agent, upstream thread id) to continue
    made = []
    for index in range(count):
        source = Source.GATEWAY if rng.random() < 0.45 else Source.PLAYGROUND
        user = rng.choice(users) if source == Source.PLAYGROUND else None
        token = rng.choice(tokens) if source == Source.GATEWAY else None
        if threads and rng.random() < 0.3:
            agent, thread_id = rng.choice(threads)
            body = {"agent": agent, "prompt": rng.choice(FOLLOW_UPS), "threadId": thread_id}
        else:
            agent = rng.choices(list(PROMPTS), weights=[5, 4, 2, 1])[0]
            body = {"agent": agent, "prompt": rng.choice(PROMPTS[agent])}
        body["stream"] = rng.random() < 0.7
        body["config"] = {"maxTurns": rng.choice([4, 8, 12]), "maxTokens": 4096}
        simulate = {"dripMs": 0} if agent == "slow-poke" else {}
        if rng.random() < 0.07:
            simulate.update(rng.choice(FAULTS))
        body["metadata"] = {"env": rng.choice(["prod", "staging"]), "simulate": simulate}
        run = await _execute(team, body, user=user, token=token, source=source)
        if run.upstream_thread_id and run.status == "completed":
            threads.append((agent, run.upstream_thread_id))
        # Older runs first, so a thread's turns stay in order; busier on weekdays and lately.
        age = timedelta(days=30) * (1 - (index / max(count, 1)) ** 0.8)
        made.append((run, now - age + timedelta(seconds=rng.randint(0, 3600))))
    for run, when in made:
        await sync_to_async(_spread_back)(await Run.objects.aget(pk=run.pk), min(when, now))
    await sync_to_async(_restamp_threads)(team)
    await sync_to_async(rebuild_usage)(team)
    await sync_to_async(_touch_tokens)(tokens)
    return len(made)


def _restamp_threads(team: Team) -> None:
    """A thread began with its first run and was last active at its latest run's end, as the
    recording path would have stamped it had the runs happened when they are dated."""
    for thread in Thread.objects.filter(team=team):
        runs = Run.objects.filter(team=team, upstream_thread_id=thread.upstream_id)
        first = runs.order_by("started_at", "pk").first()
        latest = runs.order_by("-started_at", "-pk").first()
        if first is None or latest is None:
            continue
        Thread.objects.filter(pk=thread.pk).update(
            created_at=first.started_at,
            last_activity_at=latest.finished_at or latest.started_at,
        )


def _touch_tokens(tokens: list[GatewayToken]) -> None:
    """A token's last use is its latest run, as the gateway would have recorded it."""
    for token in tokens:
        latest = Run.objects.filter(token=token).order_by("-started_at").first()
        if latest is not None:
            GatewayToken.objects.filter(pk=token.pk).update(last_used_at=latest.started_at)


def seed_with_simulator(
    team: Team,
    users: list,
    tokens: list[GatewayToken],
    count: int,
    *,
    key: str,
    store_path: Path | None = None,
) -> int:
    """Start a private simulator, point rtdash at it for the seed, and stop it again.

    With `store_path`, the simulator keeps what the seed made in that file (its `--store`), so
    the simulator `make run` starts afterwards on the same file knows the demo's threads.
    """
    from simulator.testing import SimulatorServer

    with SimulatorServer(keys=(key,), store_path=store_path) as simulator:
        previous = settings.RUNTOOLS_API_URL
        settings.RUNTOOLS_API_URL = simulator.url
        try:
            return asyncio.run(seed(team, users, tokens, count))
        finally:
            settings.RUNTOOLS_API_URL = previous


def _replay_body(run: Run) -> dict:
    """The body the run was sent with, so the simulator's deterministic scripts say it again."""
    body: dict = {"agent": run.agent, "threadId": run.upstream_thread_id, "stream": run.stream}
    for name in ("prompt", "messages", "config", "metadata"):
        value = getattr(run, name)
        if value:
            body[name] = value
    return body


def replay_missing_threads(team: Team, *, key: str, store_path: Path) -> int:
    """Make the simulator stored at `store_path` know every thread of `team` it has lost.

    For a history seeded before the simulator kept a store (or after the file was deleted): each
    missing thread's runs are sent again, oldest first, with the thread's id, which the
    simulator adopts. Its scripts depend only on the request and the turn count, so the thread
    it rebuilds says what the recorded runs said. Returns how many threads were replayed.
    """
    import httpx

    from simulator.testing import SimulatorServer

    threads = list(Thread.objects.filter(team=team, deleted_at__isnull=True))
    replayed = 0
    with (
        SimulatorServer(keys=(key,), store_path=store_path) as simulator,
        httpx.Client(base_url=simulator.url, headers={"X-API-Key": key}, timeout=30) as api,
    ):
        for thread in threads:
            path = f"/threads/{quote(thread.upstream_id, safe='')}"
            if api.get(path).status_code != 404:
                continue
            runs = Run.objects.filter(team=team, upstream_thread_id=thread.upstream_id)
            for run in runs.order_by("started_at", "pk"):
                # Read to the end: the simulator records a streamed turn as its frames go out.
                with api.stream("POST", "/run", json=_replay_body(run)) as response:
                    response.read()
            replayed += 1
    return replayed
