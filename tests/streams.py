"""Reading SSE in tests: one text-level parser, and ids the simulator makes fresh per run.

The parser is httpx-sse's, the reference reading of the HTML spec, so a test never agrees with
rtdash's own incremental parser (runs/core/sse.py) only because both share a mistake. Where a
test must show that bytes passed through untouched, it compares the bytes instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx
from httpx_sse import EventSource

# Run, thread, sandbox, tool-call and request ids differ between two otherwise identical runs.
_IDS = re.compile(rb"(run|thr|req|sandbox|call)[_-][A-Za-z0-9]+")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BLANK_LINES = re.compile(r"(?:\r\n|\r|\n){2,}")


def normalise_ids(raw: bytes) -> bytes:
    return _IDS.sub(lambda match: match.group(1) + b"_ID", raw)


class Frame(NamedTuple):
    """One dispatched event; a tuple, so `(event, data)` pairs compare equal to it."""

    event: str  # "message" when the frame had no `event:` line, as the spec says
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Stream:
    frames: list[Frame] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)  # `: ping` keep-alives, text stripped
    leftover: str = ""  # what followed the last blank line: an unfinished frame


def parse_sse(body: bytes | str) -> Stream:
    """A complete SSE body read as a browser's EventSource would, plus its comments (which
    httpx-sse drops) and whatever an unfinished last frame left behind."""
    text = body.decode() if isinstance(body, bytes) else body
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, text=text)
    frames = [Frame(event.event, event.data) for event in EventSource(response).iter_sse()]
    # A line that starts with a colon is a comment wherever it appears (the spec's rule).
    comments = [line[1:].strip() for line in _LINE_BREAK.split(text) if line.startswith(":")]
    return Stream(frames, comments, _BLANK_LINES.split(text)[-1])


def frames(raw: bytes | str) -> list[Frame]:
    return parse_sse(raw).frames


def payloads(raw: bytes | str) -> list[dict]:
    """The JSON objects among the frames' data; other data ([DONE], plain text) skipped."""
    out = []
    for frame in frames(raw):
        try:
            value = frame.json
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
