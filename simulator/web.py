"""The little HTTP layer the simulator needs on top of raw ASGI: requests, JSON replies, errors.

No framework on purpose: the simulator has to control every byte it writes (headers before a
hang, SSE frames batched into few sends), and a plain ASGI callable keeps that obvious.
"""

from __future__ import annotations

import datetime
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The statuses and codes of the upstream's error envelope. 405 and 503 are the simulator's own
# additions for a wrong method and for `metadata.simulate.status: 503`.
ERROR_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    429: "rate_limited",
    500: "internal_error",
    502: "provider_error",
    503: "unavailable",
}

# Bodies above this are refused, so a runaway client cannot make the simulator buffer gigabytes.
MAX_BODY_BYTES = 8 * 1024 * 1024


class ApiError(Exception):
    """Raised anywhere in a handler; the app turns it into the upstream's error envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or ERROR_CODES[status]
        self.message = message
        self.headers = list(headers)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def new_id(prefix: str, nbytes: int = 8) -> str:
    return f"{prefix}{secrets.token_hex(nbytes)}"


def utc_now() -> str:
    """ISO-8601 UTC with milliseconds and a Z, the form the upstream's timestamps take."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def dumps(value: Any) -> bytes:
    # Compact separators: the bytes are what a benchmark pushes through a proxy.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Request:
    scope: Scope
    receive: Receive
    request_id: str = field(default_factory=lambda: new_id("req_"))
    params: dict[str, str] = field(default_factory=dict)  # path parameters from the route
    api_key: str = ""
    _body: bytes | None = field(default=None, repr=False)  # read once, then kept

    @property
    def method(self) -> str:
        return str(self.scope["method"]).upper()

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        for key, value in self.scope.get("headers", ()):
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def query(self, name: str) -> str | None:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get(name)
        return values[-1] if values else None

    async def body(self) -> bytes:
        if self._body is None:
            self._body = await self._read_body()
        return self._body

    async def _read_body(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise bad_request(f"request body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def json_object(self) -> dict[str, Any]:
        """The body as a JSON object, or a 400 that says what is wrong with it."""
        raw = await self.body()
        if not raw.strip():
            raise bad_request("request body must be a JSON object")
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise bad_request(f"malformed JSON body: {exc}") from exc
        if not isinstance(value, dict):
            raise bad_request("request body must be a JSON object")
        return value


class Response:
    """A complete, non-streaming reply."""

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str | None = "application/json",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.headers = list(headers)
        if content_type and status != 204:
            self.headers.append(("content-type", content_type))

    async def __call__(self, send: Send, receive: Receive) -> None:
        headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in self.headers]
        if self.status != 204:
            headers.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if self.status == 204 else self.body})


def ok(request: Request, data: Any, *, status: int = 200, **meta: Any) -> Response:
    """The success envelope: `{"data": ..., "meta": {"requestId": ...}}`."""
    body = {"data": data, "meta": {"requestId": request.request_id, **meta}}
    return Response(status, dumps(body))


def error_response(request_id: str, error: ApiError) -> Response:
    body = {"error": {"code": error.code, "message": error.message, "requestId": request_id}}
    return Response(error.status, dumps(body), headers=error.headers)
