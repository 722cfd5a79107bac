"""The team's agents: RunTools' list (cached per team), else the agents in the team's history
when RunTools cannot say. The playground offers them; budgets check names against them."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.core.cache import cache

from runs.core import upstream
from runs.core.access import for_team
from runs.core.crypto import KeyDecryptionError, SealedKey
from runs.core.ratelimit import CacheUnavailable
from runs.models import DailyUsage, Team

# The agent list is asked of the upstream at most once a minute per team; a failure is
# remembered for a few seconds so a down upstream does not slow every page load.
AGENTS_CACHE_SECONDS = 60
AGENTS_FAILURE_CACHE_SECONDS = 10
AGENTS_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Agent:
    slug: str
    name: str = ""
    description: str = ""


async def _fetch_agents(key: SealedKey) -> list[Agent] | None:
    try:
        async with asyncio.timeout(AGENTS_TIMEOUT_SECONDS):
            response = await upstream.call(key, "GET", "/agents")
    except (upstream.UpstreamError, TimeoutError):
        return None
    if response.status_code != 200:
        return None
    try:
        envelope = response.json()
    except ValueError:
        return None
    items = envelope.get("data", envelope) if isinstance(envelope, dict) else envelope
    if not isinstance(items, list):
        return None
    agents = []
    for item in items:
        if not isinstance(item, dict):
            continue
        slug = item.get("slug") or item.get("id")
        if isinstance(slug, str) and slug:
            name, description = item.get("name"), item.get("description")
            agents.append(
                Agent(
                    slug=slug[:200],
                    name=name if isinstance(name, str) else "",
                    description=description if isinstance(description, str) else "",
                )
            )
    return agents


def _upstream_agents(team: Team) -> list[Agent] | None:
    key = team.default_key()
    if key is None:
        return None
    sealed = SealedKey(key.ciphertext)
    try:
        sealed.check()
    except KeyDecryptionError:
        return None
    return async_to_sync(_fetch_agents)(sealed)


def _history_agents(team: Team) -> list[Agent]:
    # The daily rollup has one row per agent and day: far fewer rows than the runs table.
    slugs = for_team(DailyUsage, team).order_by("agent").values_list("agent", flat=True).distinct()
    return [Agent(slug=slug) for slug in slugs[:200] if slug]


def team_agents(team: Team) -> tuple[list[Agent], bool]:
    """The agents to offer, and whether they came from the upstream (else from history)."""
    cache_key = f"rtdash:playground:agents:{team.pk}"
    try:
        agents = cache.get(cache_key)
    except CacheUnavailable:
        agents = None  # the cache's Redis is down: ask the upstream, the page still works
    if agents is None:
        fetched = _upstream_agents(team)
        agents = fetched if fetched is not None else False
        timeout = AGENTS_CACHE_SECONDS if fetched is not None else AGENTS_FAILURE_CACHE_SECONDS
        with contextlib.suppress(CacheUnavailable):
            cache.set(cache_key, agents, timeout)
    if agents is False:
        return _history_agents(team), False
    return agents, True
