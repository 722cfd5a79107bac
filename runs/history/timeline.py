"""A run's stored frames turned into a timeline a person can read.

Consecutive deltas become one block of text (or thinking), a tool call gathers its input, its
streamed output and its final output, and anything rtdash does not know is shown as it came.
Nothing here produces HTML: every string is handed to templates, which escape it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from runs.core.sse import DONE

# A page of a run is not the place for megabytes of one answer; the raw frames have it all.
MAX_TEXT_CHARS = 200_000


@dataclass
class ToolCall:
    call_id: str
    tool: str
    input: str = ""
    streamed_text: str = ""
    output: str | None = None
    is_error: bool = False
    completed: bool = False

    @property
    def shown_output(self) -> str:
        """The final output when the runtime sent one, else what streamed."""
        return self.output if self.output is not None else self.streamed_text


@dataclass
class Item:
    """One entry of the timeline. `kind` picks the template block that shows it."""

    kind: str  # start, text, thinking, message, tool, completed, error, done, other
    sequence: int
    last_sequence: int
    event: str = ""
    text: str = ""
    tool: ToolCall | None = None
    details: list[tuple[str, str]] = field(default_factory=list)
    frames: int = 1
    truncated: bool = False
    _parts: list[str] = field(default_factory=list, repr=False)
    _chars: int = field(default=0, repr=False)

    def append(self, text: str) -> None:
        if self._chars >= MAX_TEXT_CHARS:
            self.truncated = True
            return
        self._parts.append(text)
        self._chars += len(text)


def parse_data(data: str) -> Any:
    """The frame's data as JSON when it is a JSON object or array, else None."""
    text = data.lstrip()
    if text[:1] not in ("{", "["):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def pretty(value: Any) -> str:
    """JSON for people: indented, non-ASCII kept, strings as they are."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


class TimelineBuilder:
    # The documented frame vocabulary; every other frame is shown as it came ("other").
    HANDLERS: dict[str, Callable[[TimelineBuilder, int, str, dict], None]]

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.tool_items: dict[str, Item] = {}

    def add(self, sequence: int, event: str, data: str) -> None:
        if data.strip() == DONE:
            self._push(Item("done", sequence, sequence, event=event or "message", text=DONE))
            return
        payload = parse_data(data)
        if not isinstance(payload, dict):
            self._push(Item("other", sequence, sequence, event=event, text=data))
            return
        name = event if event and event != "message" else _text(payload.get("type")) or event
        handler = self.HANDLERS.get(name)
        if handler is None:
            self._push(Item("other", sequence, sequence, event=name, text=pretty(payload)))
            return
        handler(self, sequence, name, payload)

    def _push(self, item: Item) -> Item:
        self.items.append(item)
        return item

    def _delta(self, kind: str, sequence: int, event: str, delta: str) -> None:
        last = self.items[-1] if self.items else None
        if last is None or last.kind != kind:
            last = self._push(Item(kind, sequence, sequence, event=event, frames=0))
        last.last_sequence = sequence
        last.frames += 1
        last.append(delta)

    def _on_run_started(self, sequence: int, event: str, payload: dict) -> None:
        details = [
            (label, str(payload[key]))
            for label, key in (
                ("run", "runId"),
                ("thread", "threadId"),
                ("mode", "executionMode"),
                ("sandbox", "sandboxId"),
            )
            if payload.get(key) not in (None, "")
        ]
        self._push(Item("start", sequence, sequence, event=event, details=details))

    def _on_assistant_message_delta(self, sequence: int, event: str, payload: dict) -> None:
        self._delta("text", sequence, event, _text(payload.get("delta")))

    def _on_assistant_thinking_delta(self, sequence: int, event: str, payload: dict) -> None:
        self._delta("thinking", sequence, event, _text(payload.get("delta")))

    def _tool(self, sequence: int, event: str, payload: dict) -> Item:
        """The tool call a frame belongs to; a frame for an unseen id starts one."""
        call_id = str(payload.get("toolCallId", ""))
        item = self.tool_items.get(call_id)
        if item is None:
            call = ToolCall(call_id=call_id, tool=_text(payload.get("tool")) or "unknown tool")
            item = self._push(Item("tool", sequence, sequence, event=event, tool=call))
            self.tool_items[call_id] = item
        else:
            item.last_sequence = sequence
            item.frames += 1
        return item

    def _on_tool_call_started(self, sequence: int, event: str, payload: dict) -> None:
        call = self._tool(sequence, event, payload).tool
        call.tool = _text(payload.get("tool")) or call.tool
        call.input = pretty(payload.get("input", ""))

    def _on_tool_output_delta(self, sequence: int, event: str, payload: dict) -> None:
        # Streamed output is kept on the item (bounded), joined once at the end.
        self._tool(sequence, event, payload).append(_text(payload.get("delta")))

    def _on_tool_call_completed(self, sequence: int, event: str, payload: dict) -> None:
        call = self._tool(sequence, event, payload).tool
        if "output" in payload:
            call.output = pretty(payload["output"])
        call.is_error = payload.get("isError") is True
        call.completed = True

    def _on_assistant_message(self, sequence: int, event: str, payload: dict) -> None:
        content = payload.get("content")
        content = content if isinstance(content, str) else pretty(content)
        last = self.items[-1] if self.items else None
        if last is not None and last.kind == "text" and "".join(last._parts) == content:
            # The whole message repeats the deltas just shown: mark them final, not twice.
            last.kind = "message"
            last.last_sequence = sequence
            last.frames += 1
            return
        self._push(Item("message", sequence, sequence, event=event)).append(content)

    def _on_run_completed(self, sequence: int, event: str, payload: dict) -> None:
        details = []
        if payload.get("status") is not None:
            details.append(("status", str(payload["status"])))
        if payload.get("iterations") is not None:
            details.append(("iterations", str(payload["iterations"])))
        if isinstance(payload.get("usage"), dict):
            for key, value in payload["usage"].items():
                details.append((str(key), str(value)))
        self._push(Item("completed", sequence, sequence, event=event, details=details))

    def _on_error(self, sequence: int, event: str, payload: dict) -> None:
        error = payload.get("error") if isinstance(payload.get("error"), dict) else payload
        code = _text(error.get("code")) or "error"
        message = error.get("message")
        text = message if isinstance(message, str) else pretty(error)
        details = [("code", code)]
        self._push(Item("error", sequence, sequence, event=event, text=text, details=details))

    def finish(self) -> list[Item]:
        for item in self.items:
            if item._parts:
                joined = "".join(item._parts)
                if item.tool is not None:
                    item.tool.streamed_text = joined
                else:
                    item.text = joined
                item._parts = []
        return self.items


TimelineBuilder.HANDLERS = {
    "run_started": TimelineBuilder._on_run_started,
    "assistant_message_delta": TimelineBuilder._on_assistant_message_delta,
    "assistant_thinking_delta": TimelineBuilder._on_assistant_thinking_delta,
    "tool_call_started": TimelineBuilder._on_tool_call_started,
    "tool_output_delta": TimelineBuilder._on_tool_output_delta,
    "tool_call_completed": TimelineBuilder._on_tool_call_completed,
    "assistant_message": TimelineBuilder._on_assistant_message,
    "run_completed": TimelineBuilder._on_run_completed,
    "error": TimelineBuilder._on_error,
}


def build_timeline(frames: Iterable[tuple[int, str, str]]) -> list[Item]:
    """(sequence, event, data) in order → timeline items."""
    builder = TimelineBuilder()
    for sequence, event, data in frames:
        builder.add(sequence, event, data)
    return builder.finish()
