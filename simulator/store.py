"""In-memory threads, one separate store per API key so two keys never see each other's data."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .agents import Agent
from .web import bad_request, new_id, utc_now

TITLE_MAX = 80


def make_title(prompt: str) -> str:
    title = " ".join(prompt.split())
    return title if len(title) <= TITLE_MAX else title[: TITLE_MAX - 1] + "…"


@dataclass
class Event:
    sequence: int
    thread_id: str
    run_id: str
    type: str
    payload: dict[str, Any]
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "threadId": self.thread_id,
            "runId": self.run_id,
            "type": self.type,
            "payload": self.payload,
            "createdAt": self.created_at,
        }


@dataclass
class Thread:
    id: str
    agent: Agent
    title: str
    created_at: str
    updated_at: str
    touched: int  # a per-key counter: orders threads newest-first without clock ties
    archived: bool = False
    sandbox_id: str | None = None
    events: list[Event] = field(default_factory=list)

    @property
    def turns(self) -> int:
        return sum(1 for event in self.events if event.type == "user_message")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agentId": self.agent.id,
            "title": self.title,
            "executionMode": self.agent.execution_mode,
            "archived": self.archived,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


class KeyStore:
    """The threads one API key can see."""

    def __init__(self) -> None:
        self.threads: dict[str, Thread] = {}
        self.clock = 0  # the last `touched` value handed out (kept by --store)

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def touch(self, thread: Thread) -> None:
        thread.updated_at = utc_now()
        thread.touched = self._tick()

    def open_thread(self, thread_id: str | None, agent: Agent, prompt: str) -> Thread:
        """Continue a thread, or start one. An unknown id is adopted, as the contract allows."""
        if thread_id and thread_id in self.threads:
            return self.threads[thread_id]
        now = utc_now()
        thread = Thread(
            id=thread_id or new_id("thr_"),
            agent=agent,
            title=make_title(prompt),
            created_at=now,
            updated_at=now,
            touched=self._tick(),
            # One sandbox per thread, as a sandbox-backed agent keeps its workspace between runs.
            sandbox_id=new_id("sandbox-", 6) if agent.in_sandbox else None,
        )
        self.threads[thread.id] = thread
        return thread

    def append(self, thread: Thread, run_id: str, type_: str, payload: dict[str, Any]) -> Event:
        event = Event(len(thread.events) + 1, thread.id, run_id, type_, payload, utc_now())
        thread.events.append(event)
        self.touch(thread)
        return event

    def newest_first(self, agent: Agent | None = None) -> list[Thread]:
        threads = [t for t in self.threads.values() if agent is None or t.agent is agent]
        return sorted(threads, key=lambda t: t.touched, reverse=True)


class Store:
    def __init__(self) -> None:
        self._by_key: dict[str, KeyStore] = {}

    def for_key(self, api_key: str) -> KeyStore:
        return self._by_key.setdefault(api_key, KeyStore())

    def items(self) -> list[tuple[str, KeyStore]]:
        return list(self._by_key.items())

    def put(self, api_key: str, keys: KeyStore) -> None:
        self._by_key[api_key] = keys


def encode_cursor(kind: str, position: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> int | None:
    """The position inside an opaque cursor; a cursor that was not ours is a 400."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = raw.partition(":")
        if prefix != kind:
            raise ValueError(prefix)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise bad_request("cursor is not a cursor this endpoint issued") from exc


def parse_limit(raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError as exc:
        raise bad_request(f"limit must be an integer between 1 and {maximum}") from exc
    if not 1 <= limit <= maximum:
        raise bad_request(f"limit must be an integer between 1 and {maximum}")
    return limit


def page_threads(
    threads: Sequence[Thread], limit: int, cursor: str | None
) -> tuple[list[Thread], str | None]:
    """Keyset pages over newest-first threads: the cursor is the last `touched` seen."""
    after = decode_cursor("t", cursor)
    rest = [t for t in threads if after is None or t.touched < after]
    page = rest[:limit]
    more = len(rest) > limit
    return page, encode_cursor("t", page[-1].touched) if more else None


def page_events(
    events: Sequence[Event], limit: int, cursor: str | None
) -> tuple[list[Event], str | None]:
    """Oldest-first pages of a thread's events: the cursor is the last sequence seen."""
    after = decode_cursor("e", cursor) or 0
    rest = [e for e in events if e.sequence > after]
    page = rest[:limit]
    more = len(rest) > limit
    return page, encode_cursor("e", page[-1].sequence) if more else None
