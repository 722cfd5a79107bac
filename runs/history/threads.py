"""Threads as people read them: rtdash's records merged with what RunTools knows.

rtdash records the runs that pass through it; RunTools keeps every thread of the team's key,
including turns made outside rtdash. The threads list (runs.history.thread_list) merges the
two lists, and a thread's
page merges its recorded runs with the upstream's events, marking the turns rtdash only knows
from RunTools. Upstream data is untrusted text: nothing here builds HTML.

Upstream calls go through `runs.core.upstream`, with the team's default key from `team_key`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction
from django.db.models import QuerySet
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from runs.core import upstream
from runs.core.access import for_team
from runs.core.crypto import KeyDecryptionError, SealedKey
from runs.models import Run, RunEvent, Team, Thread
from runs.pipeline.frames import stored_payloads

THREAD_PAGE_SIZE = 50
# Input tokens growing on this many consecutive turns is flagged: each turn re-sends the whole
# conversation, so the thread costs more to continue every time.
CLIMBING_TURNS = 3


class NoKey(Exception):
    """The team has no usable RunTools key, so upstream data cannot be read."""


def team_key(team: Team) -> SealedKey:
    """The team's default key, sealed until runs.core.upstream puts it on a request. Raises NoKey,
    also when the key cannot be decrypted (checked here, so callers need not)."""
    key = team.default_key()
    if key is None:
        raise NoKey("The team has no RunTools key.")
    sealed = SealedKey(key.ciphertext)
    try:
        sealed.check()
        return sealed
    except KeyDecryptionError:
        raise NoKey("The team's RunTools key cannot be decrypted.") from None


def page_url(upstream_id: str) -> str:
    """The thread's page, or "" for an id no URL here can hold: RunTools' ids are its own, and
    one with a "/" in it has no page (it stays unlinked, as the templates leave it)."""
    try:
        return reverse("thread_detail", args=[upstream_id])
    except NoReverseMatch:
        return ""


def thread_path(upstream_id: str) -> str:
    """The upstream path of a thread. Ids are opaque, so every character that means something
    in a URL is escaped: an id like `x?agent=y` or `..` cannot reach another endpoint."""
    return upstream.endpoint("threads", upstream_id)


def _error_code(response) -> str:
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""
    return code[:50] if isinstance(code, str) else ""


def describe_refusal(response) -> str:
    """A short description of an upstream refusal: the status and code, never its body."""
    code = _error_code(response)
    return f"HTTP {response.status_code}{f' {code}' if code else ''}"


def _data(response) -> Any:
    """The `data` of an envelope, or the body itself (some endpoints send raw payloads)."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("data", body) if isinstance(body, dict) else body


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is not None and timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


# --- RunTools' list of threads -----------------------------------------------------------


@dataclass
class UpstreamThread:
    id: str
    agent: str
    title: str
    archived: bool
    updated_at: datetime | None


@dataclass
class UpstreamList:
    threads: list[UpstreamThread] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def _list_agent_threads(key: SealedKey, agent: str) -> tuple[str, Any]:
    try:
        response = await upstream.call(key, "GET", "/run/threads", params={"agent": agent})
    except upstream.UpstreamError as error:
        return agent, error
    return agent, response


async def _list_all(key: SealedKey, agents: list[str]) -> list[tuple[str, Any]]:
    return await asyncio.gather(*(_list_agent_threads(key, agent) for agent in agents))


def upstream_threads(team: Team, agents: list[str]) -> UpstreamList:
    """The upstream's threads for each agent the team has used, read concurrently."""
    found = UpstreamList()
    if not agents:
        return found
    try:
        key = team_key(team)
    except NoKey as problem:
        found.problems.append(str(problem))
        return found
    unreachable = None
    for agent, answer in async_to_sync(_list_all)(key, agents):
        if isinstance(answer, upstream.UpstreamError):
            unreachable = answer.message
            continue
        if answer.status_code != 200:
            found.problems.append(
                f"RunTools refused the thread list of {agent} ({describe_refusal(answer)})."
            )
            continue
        data = _data(answer)
        if isinstance(data, dict):
            data = data.get("threads")
        if not isinstance(data, list):
            found.problems.append(f"RunTools sent a thread list for {agent} rtdash cannot read.")
            continue
        for item in data:
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
                found.threads.append(
                    UpstreamThread(
                        id=item["id"][:200],
                        agent=agent,
                        title=_text(item.get("title")),
                        archived=item.get("archived") is True,
                        updated_at=_when(item.get("updatedAt")) or _when(item.get("createdAt")),
                    )
                )
    if unreachable:
        found.problems.insert(0, f"RunTools could not be reached: {unreachable}.")
    return found


# --- One thread, turn by turn ---------------------------------------------------------------


@dataclass
class ToolUse:
    tool: str
    input: str = ""
    output: str = ""
    is_error: bool = False


@dataclass
class Turn:
    at: datetime | None
    user: str = ""
    assistant: str = ""
    tools: list[ToolUse] = field(default_factory=list)
    run: Run | None = None
    upstream_run_id: str = ""
    # Filled in by `number_turns` for recorded turns.
    number: int = 0
    tokens_so_far: int = 0
    cost_so_far: Decimal | None = None
    cost_so_far_complete: bool = True

    @property
    def recorded(self) -> bool:
        return self.run is not None


@dataclass
class UpstreamThreadDetail:
    thread: dict | None = None
    events: list[dict] = field(default_factory=list)
    found: bool = False
    problem: str = ""


def fetch_thread(team: Team, upstream_id: str) -> UpstreamThreadDetail:
    """The upstream's thread and its events (GET /v1/threads/{id}), or why not."""
    detail = UpstreamThreadDetail()
    try:
        key = team_key(team)
    except NoKey as problem:
        detail.problem = str(problem)
        return detail
    try:
        response = async_to_sync(upstream.call)(key, "GET", thread_path(upstream_id))
    except upstream.UpstreamError as error:
        detail.problem = f"RunTools could not be reached: {error.message}."
        return detail
    if response.status_code == 404:
        detail.problem = "RunTools has no thread with this id (it may have been deleted there)."
        return detail
    if response.status_code != 200:
        detail.problem = f"RunTools refused to show this thread ({describe_refusal(response)})."
        return detail
    data = _data(response)
    if not isinstance(data, dict):
        detail.problem = "RunTools sent a thread rtdash cannot read."
        return detail
    detail.found = True
    detail.thread = data.get("thread") if isinstance(data.get("thread"), dict) else None
    events = data.get("events")
    detail.events = [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []
    return detail


def _content(payload: Any) -> str:
    if not isinstance(payload, dict):
        return ""
    content = payload.get("content")
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False) if content is not None else ""


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _turns_from_events(events: Iterable[dict]) -> dict[str, Turn]:
    """Upstream events grouped by run id, in the order the runs first appear."""
    turns: dict[str, Turn] = {}
    tools: dict[tuple[str, str], ToolUse] = {}
    ordered = sorted(
        events, key=lambda e: e.get("sequence") if isinstance(e.get("sequence"), int) else 0
    )
    for event in ordered:
        run_id = _text(event.get("runId"))
        turn = turns.get(run_id)
        if turn is None:
            turn = turns[run_id] = Turn(at=_when(event.get("createdAt")), upstream_run_id=run_id)
        payload = event.get("payload")
        kind = event.get("type")
        if kind == "user_message":
            turn.user = _content(payload)
        elif kind == "assistant_message":
            turn.assistant = _content(payload)
        elif kind in ("tool_call_started", "tool_call_completed") and isinstance(payload, dict):
            call_id = _text(payload.get("toolCallId"))
            use = tools.get((run_id, call_id))
            if use is None:
                use = tools[(run_id, call_id)] = ToolUse(tool=_text(payload.get("tool")) or "tool")
                turn.tools.append(use)
            if "input" in payload:
                use.input = _pretty(payload["input"])
            if "output" in payload:
                use.output = _pretty(payload["output"])
            use.is_error = use.is_error or payload.get("isError") is True
    return turns


def _tools_from_frames(run_ids: list[int]) -> dict[int, list[ToolUse]]:
    """Tool calls of recorded runs, from their stored frames (for runs RunTools no longer has)."""
    found: dict[int, list[ToolUse]] = {}
    calls: dict[tuple[int, str], ToolUse] = {}
    for run_id, payload in stored_payloads(run_ids, ("tool_call_started", "tool_call_completed")):
        call_id = _text(payload.get("toolCallId"))
        use = calls.get((run_id, call_id))
        if use is None:
            use = calls[(run_id, call_id)] = ToolUse(tool=_text(payload.get("tool")) or "tool")
            found.setdefault(run_id, []).append(use)
        if "input" in payload:
            use.input = _pretty(payload["input"])
        if "output" in payload:
            use.output = _pretty(payload["output"])
        use.is_error = use.is_error or payload.get("isError") is True
    return found


def _first_user_text(run: Run) -> str:
    if run.prompt:
        return run.prompt
    for message in reversed(run.messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content(message)
    return ""


def build_turns(runs: list[Run], events: list[dict]) -> list[Turn]:
    """The conversation: recorded runs and upstream-only turns, in the order they happened."""
    from_upstream = _turns_from_events(events)
    position = {run_id: index for index, run_id in enumerate(from_upstream)}
    frame_tools = _tools_from_frames([run.pk for run in runs if run.frame_count])
    turns = []
    for run in runs:
        seen = from_upstream.pop(run.upstream_run_id, None) if run.upstream_run_id else None
        turn = Turn(
            at=run.started_at,
            user=_first_user_text(run),
            assistant=run.result or (seen.assistant if seen else ""),
            tools=(seen.tools if seen and seen.tools else frame_tools.get(run.pk, [])),
            run=run,
            upstream_run_id=run.upstream_run_id,
        )
        turns.append((position.get(run.upstream_run_id), run.started_at, turn))
    for run_id, turn in from_upstream.items():
        turns.append((position[run_id], turn.at, turn))
    # Upstream order where RunTools knows the turn; rtdash's clock for the rest.
    epoch = datetime.min.replace(tzinfo=UTC)
    turns.sort(key=lambda item: (item[1] or epoch, item[0] if item[0] is not None else -1))
    ordered = [turn for _position, _at, turn in turns]
    number_turns(ordered)
    return ordered


def number_turns(turns: list[Turn]) -> None:
    """Number the turns and keep running totals of the recorded ones' tokens and cost.

    The cost so far stays None until a turn with a cost: turns without a price never add up
    to "$0".
    """
    tokens, cost, complete = 0, None, True
    for number, turn in enumerate(turns, start=1):
        turn.number = number
        if turn.run is not None:
            tokens += (turn.run.input_tokens or 0) + (turn.run.output_tokens or 0)
            if turn.run.cost is None:
                complete = False
            else:
                cost = (cost or Decimal(0)) + turn.run.cost
        turn.tokens_so_far = tokens
        turn.cost_so_far = cost
        turn.cost_so_far_complete = complete


@dataclass
class Climb:
    turns: int
    first: int
    last: int


def climbing_input(turns: list[Turn]) -> Climb | None:
    """Input tokens that grew on each of the last CLIMBING_TURNS recorded turns, or None."""
    inputs = [
        turn.run.input_tokens
        for turn in turns
        if turn.run is not None and turn.run.input_tokens is not None
    ]
    streak = 0
    for previous, current in pairwise(inputs):
        streak = streak + 1 if current > previous else 0
    if streak < CLIMBING_TURNS:
        return None
    return Climb(turns=streak + 1, first=inputs[-streak - 1], last=inputs[-1])


def thread_runs(team: Team, upstream_id: str) -> QuerySet[Run]:
    return (
        for_team(Run, team)
        .filter(upstream_thread_id=upstream_id)
        .select_related("user", "token")
        .order_by("started_at", "pk")
    )


# --- Changing and deleting ------------------------------------------------------------------


def forget_thread_content(team: Team, upstream_id: str) -> int:
    """Remove a deleted thread's content from rtdash; returns how many runs were cleared.

    Prompts, messages, results, metadata and stored frames go, and so does the title (the
    first prompt). Each run's usage, cost, status and timings stay, so reports stay true.
    """
    now = timezone.now()
    with transaction.atomic():
        runs = for_team(Run, team).filter(upstream_thread_id=upstream_id)
        run_ids = list(runs.values_list("pk", flat=True))
        for start in range(0, len(run_ids), 500):
            RunEvent.objects.filter(run_id__in=run_ids[start : start + 500]).delete()
        runs.update(prompt="", messages=None, result="", metadata={})
        for_team(Thread, team).filter(upstream_id=upstream_id).update(title="", deleted_at=now)
    return len(run_ids)
