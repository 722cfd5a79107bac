"""Server-Sent Events frames and their byte encoding."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PING = b": ping\n\n"


@dataclass(slots=True)
class Frame:
    event: str | None  # the `event:` name; None for a bare `data:` frame such as [DONE]
    data: dict[str, Any] | str  # a dict is sent as JSON, a str as it is
    # A thread event (type, payload) to append once this frame has gone out, so a thread read
    # mid-stream shows what the client has seen and a dropped client leaves no phantom reply.
    record: tuple[str, dict[str, Any]] | None = None
    # Frames with the same memo encode to the same bytes, so a 100,000-delta stream encodes
    # each distinct delta once.
    memo: str | None = None


class Encoder:
    def __init__(self, *, event_line: bool = True, multiline: bool = False) -> None:
        self.event_line = event_line
        self.multiline = multiline
        self._memo: dict[str, bytes] = {}

    def encode(self, frame: Frame) -> bytes:
        if frame.memo is not None:
            cached = self._memo.get(frame.memo)
            if cached is None:
                cached = self._memo[frame.memo] = self._encode(frame)
            return cached
        return self._encode(frame)

    def _encode(self, frame: Frame) -> bytes:
        if isinstance(frame.data, str):
            text = frame.data
        elif self.multiline:
            # Pretty-printed JSON over several `data:` lines; joined with "\n" it parses the same.
            text = json.dumps(frame.data, indent=2, ensure_ascii=False)
        else:
            text = json.dumps(frame.data, separators=(",", ":"), ensure_ascii=False)
        head = f"event: {frame.event}\n" if self.event_line and frame.event else ""
        lines = "".join(f"data: {line}\n" for line in text.split("\n"))
        return f"{head}{lines}\n".encode()
