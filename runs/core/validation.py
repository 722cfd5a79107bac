"""Checks a run request before anything is sent upstream; shared by gateway and playground.

Each failure names the field, so a caller can fix it without reading rtdash's source. The
body is otherwise forwarded exactly as sent: unknown fields are RunTools' business.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse

from runs.core.errors import error_response

MAX_METADATA_BYTES = 16 * 1024
# Deeper JSON is refused: no real request nests this far, and Python's own recursion (in
# json, the ORM's JSON encoding, templates) gives out somewhere below 1,000.
MAX_JSON_DEPTH = 64
# Digits an integer may have in JSON, and in a query string: far beyond any real count or
# id, well below Python's 4,300-digit limit on int(), which raises instead of answering.
MAX_JSON_INTEGER_DIGITS = 100
MAX_QUERY_INTEGER_DIGITS = 30
# Ids that are path steps rather than names: sent upstream they would climb the path.
DOT_SEGMENTS = frozenset({".", ".."})
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_TOKENS_RANGE = (1, 128_000)
# RunTools states no bound for maxTurns: only a sane integer (a 32-bit one) is asked of it.
MAX_TURNS_RANGE = (1, 2**31 - 1)
TEMPERATURE_RANGE = (0.0, 2.0)


class InvalidRequest(Exception):
    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


class HostileJSON(InvalidRequest):
    """Text that parses as JSON but that rtdash refuses to carry: NaN or infinite numbers,
    lone surrogates, absurd nesting or integers. (Plain syntax errors are InvalidRequest.)"""


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INTEGER_DIGITS:
        raise HostileJSON("", f"an integer has more than {MAX_JSON_INTEGER_DIGITS} digits")
    return int(text)


def has_surrogates(text: str) -> bool:
    """Whether the text holds a lone surrogate (`"\\ud800"`), which UTF-8 cannot encode, so
    no database, log or response could hold it. ASCII text is answered without a scan."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def _where(path: str, root: str) -> str:
    return (path or root)[:120]


def check_json_value(value: Any, field: str, *, root: str = "") -> None:
    """Refuse a value nested deeper than MAX_JSON_DEPTH, holding a string (or key) with a
    lone surrogate, or a number that is not finite (NaN, Infinity and 1e999 parse as such in
    Python, yet are not JSON: PostgreSQL, SQLite and other clients refuse them).

    The error names the offending path below `field` (`metadata.a`, `messages[0].content`);
    `field=""` names top-level keys bare, and `root` is the name for the value itself.
    Iterative, so no input can exhaust the recursion limit.
    """
    stack: list[tuple[Any, int, str]] = [(value, 1, field)]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if has_surrogates(item):
                where = _where(path, root)
                raise HostileJSON(where, f"{where} holds a lone surrogate (invalid Unicode).")
        elif isinstance(item, float):
            if not math.isfinite(item):
                where = _where(path, root)
                raise HostileJSON(
                    where, f"{where} is not a finite number (NaN and Infinity are not JSON)."
                )
        elif isinstance(item, dict):
            if depth > MAX_JSON_DEPTH:
                # Named by its top-level field: the full path would be as long as the nesting.
                where = _where(path.replace("[", ".").split(".")[0], root)
                raise HostileJSON(where, f"{where} is nested more than {MAX_JSON_DEPTH} deep.")
            for key, child in item.items():
                name = f"{path}.{key}" if path else str(key)
                if has_surrogates(key):
                    raise HostileJSON(
                        _where(path, root), f"A key in {_where(path, root)} holds a lone surrogate."
                    )
                stack.append((child, depth + 1, name))
        elif isinstance(item, list):
            if depth > MAX_JSON_DEPTH:
                # Named by its top-level field: the full path would be as long as the nesting.
                where = _where(path.replace("[", ".").split(".")[0], root)
                raise HostileJSON(where, f"{where} is nested more than {MAX_JSON_DEPTH} deep.")
            stack.extend((child, depth + 1, f"{path}[{index}]") for index, child in enumerate(item))


def loads_strict(text: str | bytes, field: str) -> Any:
    """The one parser for JSON that comes from a client: the gateway's bodies, the
    playground's metadata, the run socket's messages.

    Raises InvalidRequest (naming `field`) for text that is not JSON, and its subclass
    HostileJSON for JSON that rtdash refuses (see `check_json_value`); for a body
    (`field="body"`) the error names the offending field itself.
    """
    try:
        value = json.loads(text, parse_int=_bounded_int)
    except HostileJSON as hostile:
        raise HostileJSON(field, f"{field} is not valid JSON: {hostile.message}.") from None
    except RecursionError:
        # The C scanner recurses once per level and gives up cleanly near the recursion limit.
        raise HostileJSON(
            field, f"{field} is not valid JSON: nested more than {MAX_JSON_DEPTH} deep."
        ) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidRequest(field, f"{field} is not valid JSON: {error}") from None
    if field == "body":
        check_json_value(value, "", root="body")
    else:
        check_json_value(value, field)
    return value


def parse_query_int(text: str, field: str, low: int, high: int) -> int:
    """An integer from a query string or a form: ASCII digits only ("²" and "٣" are digits
    to str.isdigit and int()), at most MAX_QUERY_INTEGER_DIGITS of them, within [low, high]."""
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits) > MAX_QUERY_INTEGER_DIGITS:
        raise InvalidRequest(field, f"{field} must be a whole number from {low} to {high}.")
    value = int(digits)
    if not low <= value <= high:
        raise InvalidRequest(field, f"{field} must be a whole number from {low} to {high}.")
    return value


@dataclass(frozen=True)
class RunRequest:
    """The parts of a run request rtdash records; `body` is what gets forwarded."""

    agent: str
    prompt: str
    messages: list | None
    thread_id: str
    stream: bool
    config: dict
    metadata: dict
    body: bytes


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _has_control_characters(text: str) -> bool:
    # Ids and slugs never hold them, and PostgreSQL cannot even look up a NUL.
    return any(ord(character) < 0x20 or character == "\x7f" for character in text)


def parse_body(raw: bytes, max_bytes: int) -> dict:
    if len(raw) > max_bytes:
        raise InvalidRequest("body", f"The request body is larger than {max_bytes} bytes.", 413)
    if not raw.strip():
        raise InvalidRequest("body", "The request body is empty; send a JSON object.")
    body = loads_strict(raw, "body")
    if not isinstance(body, dict):
        raise InvalidRequest("body", "The request body must be a JSON object.")
    return body


def _check_messages(messages: Any, *, may_be_empty: bool = False) -> list:
    if not isinstance(messages, list) or (not messages and not may_be_empty):
        raise InvalidRequest("messages", "messages must be a non-empty list.")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(where, f"{where} must be an object with role and content.")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise InvalidRequest(f"{where}.role", f"{where}.role must be a non-empty string.")
        content, parts = message.get("content"), message.get("parts")
        if content is None and parts is None:
            raise InvalidRequest(f"{where}.content", f"{where} needs content (or parts).")
        if content is not None and not isinstance(content, str):
            raise InvalidRequest(f"{where}.content", f"{where}.content must be a string.")
        if parts is not None and not isinstance(parts, list):
            raise InvalidRequest(f"{where}.parts", f"{where}.parts must be a list.")
    return messages


def _check_range(config: dict, name: str, bounds: tuple, whole: bool) -> None:
    if name not in config:
        return
    low, high = bounds
    value = config[name]
    if value is None:
        return  # as if absent: other SDKs send null for a setting they leave unset
    if whole and isinstance(value, float) and value.is_integer():
        # 1000.0 is 1000 (JavaScript cannot tell them apart). rtdash's copy keeps the whole
        # number, as its estimates and statistics read it; the body goes upstream as sent.
        value = config[name] = int(value)
    if not (_is_int(value) if whole else _is_number(value)) or not low <= value <= high:
        kind = "a whole number" if whole else "a number"
        raise InvalidRequest(
            f"config.{name}", f"config.{name} must be {kind} from {low:g} to {high:g}."
        )


def _check_config(config: Any) -> dict:
    if not isinstance(config, dict):
        raise InvalidRequest("config", "config must be an object.")
    _check_range(config, "maxTokens", MAX_TOKENS_RANGE, whole=True)
    _check_range(config, "maxTurns", MAX_TURNS_RANGE, whole=True)
    _check_range(config, "temperature", TEMPERATURE_RANGE, whole=False)
    return config


def _check_metadata(metadata: Any) -> dict:
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata", "metadata must be an object.")
    size = len(json.dumps(metadata, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidRequest(
            "metadata", f"metadata is {size} bytes; at most {MAX_METADATA_BYTES} are allowed."
        )
    return metadata


def _or_default(value: Any, default: Any) -> Any:
    return default if value is None else value


def validate_run(body: dict, raw: bytes, *, agent_from_path: str | None = None) -> RunRequest:
    """Validate a /v1/run body (or a legacy /v1/agents/{slug}/run body, agent from the path)."""
    agent = agent_from_path if agent_from_path is not None else body.get("agent")
    if not isinstance(agent, str) or not agent.strip():
        raise InvalidRequest("agent", "agent is required: the agent's slug or ID, as a string.")
    if len(agent) > 200:
        raise InvalidRequest("agent", "agent is longer than 200 characters.")
    if _has_control_characters(agent):
        raise InvalidRequest("agent", "agent contains control characters; use a slug or an ID.")
    if agent.strip() in DOT_SEGMENTS:
        raise InvalidRequest("agent", "agent must be a slug or an ID, not a path step.")
    prompt, messages = body.get("prompt"), body.get("messages")
    if prompt is None and messages is None:
        raise InvalidRequest("prompt", "Either prompt or messages is required.")
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidRequest("prompt", "prompt must be a string.")
    if messages is not None:
        # Beside a prompt, an empty history is no history.
        _check_messages(messages, may_be_empty=prompt is not None)
    if prompt is not None and not messages and not prompt.strip():
        raise InvalidRequest("prompt", "prompt is empty.")
    thread_id = body.get("threadId")
    if thread_id is not None and (
        not isinstance(thread_id, str) or len(thread_id) > 200 or _has_control_characters(thread_id)
    ):
        raise InvalidRequest(
            "threadId", "threadId must be a string of at most 200 printable characters."
        )
    # null is as if absent (other SDKs send null for what they leave unset): the defaults.
    stream = _or_default(body.get("stream"), True)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream", "stream must be true or false.")
    config = _check_config(_or_default(body.get("config"), {}))
    metadata = _check_metadata(_or_default(body.get("metadata"), {}))
    return RunRequest(
        agent=agent,
        prompt=prompt or "",
        messages=messages,
        thread_id=thread_id or "",
        stream=stream,
        config=config,
        metadata=metadata,
        body=raw,
    )


def read_body(request, limit: int) -> bytes:
    """A request's body, at most `limit` bytes; InvalidRequest (413) past that, whether the
    client declared it (Content-Length) or Django finds it reading (RequestDataTooBig)."""
    too_big = InvalidRequest("body", f"The request body is larger than {limit} bytes.", 413)
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise too_big
    try:
        return request.body
    except RequestDataTooBig:
        raise too_big from None


def invalid_response(problem: InvalidRequest) -> JsonResponse:
    """The error envelope for a request that failed validation: 413 `payload_too_large` for a
    body past its bound, else its status with `bad_request`, naming the field."""
    code = "payload_too_large" if problem.status == 413 else "bad_request"
    return error_response(problem.status, code, problem.message, field=problem.field)
