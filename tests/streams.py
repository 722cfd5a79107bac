"""Helpers for tests that read SSE streams: frames, and ids the simulator makes fresh per run."""

from __future__ import annotations

import json
import re

# Run, thread, sandbox, tool-call and request ids differ between two otherwise identical runs.
_IDS = re.compile(rb"(run|thr|req|sandbox|call)[_-][A-Za-z0-9]+")


def normalise_ids(raw: bytes) -> bytes:
    return _IDS.sub(lambda match: match.group(1) + b"_ID", raw)


def frames(raw: bytes) -> list[tuple[str, str]]:
    """(event, data) pairs from a complete SSE body; comments dropped, names as sent."""
    result = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        event, data = "", []
        for line in block.split(b"\n"):
            if not line or line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if name == b"event":
                event = value.decode()
            elif name == b"data":
                data.append(value.decode())
        if event or data:
            result.append((event, "\n".join(data)))
    return result


def payloads(raw: bytes) -> list[dict]:
    out = []
    for _event, data in frames(raw):
        try:
            value = json.loads(data)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
