"""An incremental Server-Sent Events parser that never rejects a frame.

RunTools says its event names and payloads vary by runtime, so this parser only splits the
byte stream into frames; it does not validate them. Comments (`: ping`) are dropped. A frame
without an `event:` line, or with the SSE default name (`event: message`, which means the same),
is named after `data.type` when the data is a JSON object that has one, else "message". A
UTF-8 byte order mark at the start of the stream is dropped, as the SSE spec says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

DONE = "[DONE]"
# The SSE default event name: a frame that says it names nothing.
DEFAULT_EVENT = "message"
BYTE_ORDER_MARK = b"\xef\xbb\xbf"


@dataclass(slots=True)
class Frame:
    event: str
    data: str
    _json: Any = field(default=None, repr=False)
    _parsed: bool = field(default=False, repr=False)

    def json(self) -> Any:
        """The data as JSON, or None when it is not JSON. Parsed at most once."""
        if not self._parsed:
            self._parsed = True
            # JSON's own whitespace only: data led by any other space (U+00A0) is not JSON.
            text = self.data.lstrip(" \t\r\n")
            if text[:1] in ("{", "["):
                try:
                    self._json = json.loads(text)
                except ValueError:
                    self._json = None
        return self._json

    @property
    def is_done(self) -> bool:
        return self.data.strip() == DONE


class SSEParser:
    def __init__(self) -> None:
        self._buffer = b""
        self._trailing_cr = False
        # The stream's first bytes, until there are enough to tell a byte order mark.
        self._start: bytes | None = b""

    def feed(self, chunk: bytes) -> list[Frame]:
        """Add bytes as they arrive; return the frames they complete."""
        if self._start is not None:
            chunk = self._start + chunk
            if len(chunk) < len(BYTE_ORDER_MARK) and BYTE_ORDER_MARK.startswith(chunk):
                self._start = chunk
                return []
            self._start = None
            chunk = chunk.removeprefix(BYTE_ORDER_MARK)
        if self._trailing_cr:
            chunk = b"\r" + chunk
            self._trailing_cr = False
        if b"\r" in chunk:
            # A CRLF may be split across two chunks: hold a final CR back until the next one.
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
                self._trailing_cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n\n" not in chunk and b"\n\n" not in self._buffer[-1:] + chunk[:1]:
            self._buffer += chunk
            return []
        *blocks, self._buffer = (self._buffer + chunk).split(b"\n\n")
        frames = []
        for block in blocks:
            frame = self._parse_block(block)
            if frame is not None:
                frames.append(frame)
        return frames

    def flush(self) -> list[Frame]:
        """At end of stream: a last frame that lacked its blank line still counts."""
        rest, self._buffer = self._buffer, b""
        frame = self._parse_block(rest) if rest.strip() else None
        return [frame] if frame is not None else []

    def _parse_block(self, block: bytes) -> Frame | None:
        event = ""
        data_lines: list[bytes] = []
        saw_field = False
        for line in block.split(b"\n"):
            if not line:
                continue
            if line[0] == 0x3A:  # ':' starts a comment, e.g. a keep-alive ping
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            saw_field = True
            if name == b"event":
                event = value.decode("utf-8", "replace")
            elif name == b"data":
                data_lines.append(value)
            # `id` and `retry` are legal and ignored; unknown fields are ignored per the spec.
        if not saw_field or (not data_lines and not event):
            return None
        data = b"\n".join(data_lines).decode("utf-8", "replace")
        if event and event != DEFAULT_EVENT:
            return Frame(event, data)
        frame = Frame(DEFAULT_EVENT, data)
        payload = frame.json()
        if isinstance(payload, dict) and isinstance(payload.get("type"), str) and payload["type"]:
            frame.event = payload["type"]
        return frame
