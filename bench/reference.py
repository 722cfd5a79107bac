"""Reference proxies for bench/gateway.py: what a proxy hop costs on this machine, today.

The gateway's targets were set beside figures measured on another machine (a bare ASGI hop
adds about 1 ms, a naive Django async view about 5 ms). Measured in the same run as rtdash,
on the same cores, these two put rtdash's overhead on a scale that does not move with the
machine:

- `bare`: a plain ASGI app that forwards the body to the upstream with one shared
  httpx.AsyncClient and returns its answer (no framework, no database).
- `django`: a Django async view doing the same (a stream relayed chunk by chunk through
  Django's streaming response), through Django's ASGI handler with three of its middleware
  (security, common, clickjacking); no database, no recording. What the stack itself costs a
  hop written the usual way.
- `recording`: the bare hop plus the least a gateway that records each run before forwarding
  it must do: one trip to a database thread that looks the token up and inserts the run's
  row (committed), in rtdash's own SQLite database, with rtdash's own two statements, on a
  raw sqlite3 connection (no ORM, no framework). Its overhead is the floor for rtdash's
  "recorded before forwarded" (`REFERENCE_DATABASE`, `REFERENCE_TOKEN_HASH`).

- `required`: the recording hop plus the rest of what rtdash's rules make every run do, each
  in its least form, still with no framework: the presented token hashed before it is looked
  up (tokens are stored hashed), the body parsed as JSON (bad input gets a clear error), the
  team's sealed key decrypted for the request (Fernet, at the last moment, as the secrets rule
  has it), a JSON answer read whole before it is answered (its usage is recorded, and a cut
  answer must get a clear error, not a truncated body) and its usage parsed, the upstream's
  own headers passed on (the same response), and the run's row completed after the response
  has left (one UPDATE on the database thread). A stream is relayed as the bare hop relays
  it, with the upstream's headers. Its overhead is the floor for rtdash with its rules, on
  this machine (`REFERENCE_DATABASE`, `REFERENCE_SEALED_KEY`).
- `required-django`: the required hop with the least of Django a hop can use: the request
  read into Django's ASGIRequest (the token from its META, the body from it), the answer
  made a Django HttpResponse or StreamingHttpResponse with the upstream's headers and sent
  by Django's own writer (ASGIHandler.send_response), as rtdash's run endpoint does. No
  handler, no middleware, no URL resolver, no signals, no validation beyond the JSON parse.
  Its overhead is the floor for rtdash with its rules and its stack, on this machine.

- `relay`: the playground's relay with nothing of rtdash in it, for bench/relay.py: a plain
  ASGI websocket app that, on the playground's `start` message, streams the run from the
  upstream with the shared httpx client, splits the SSE frames and sends each chunk's frames
  to the socket in the playground's own messages (`started`, `frames`, `finished`). No
  framework, no database, no channel layer: the floor of a Python websocket relay.

The hops can wait before each forward (`REFERENCE_WAIT_MS`), asleep or computing
(`REFERENCE_WAIT_MODE=sleep|compute`): the bare hop spending as long as rtdash's own work
before it forwards a run shows what that work alone costs a stream. rtdash's work is some of
each (database calls on its sync thread, and the hops there and back), so the two bracket it.

Both are served by uvicorn, like the simulator; run one with
`python -m bench.reference bare|django PORT UPSTREAM_URL`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import hashlib
import io
import json
import os
import sqlite3
import sys
import threading
import time

import httpx

from bench.harness import ServerProcess, asgi_body
from simulator.testing import HOST, free_port

_client: httpx.AsyncClient | None = None


def _upstream() -> httpx.AsyncClient:
    global _client
    if _client is None:
        # No pool limit (httpx's default is 100): the relay floor holds 200 streams at once, as
        # rtdash does with its own 200 (RTDASH_UPSTREAM_MAX_CONNECTIONS).
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        _client = httpx.AsyncClient(
            base_url=os.environ["REFERENCE_UPSTREAM"], timeout=60, limits=limits
        )
    return _client


async def _wait() -> float:
    """Spend REFERENCE_WAIT_MS asleep or computing; returns how long it really took (uvloop's
    timers count whole milliseconds, so a 1.4 ms sleep takes about 1.1)."""
    wait_ms = float(os.environ.get("REFERENCE_WAIT_MS") or 0)
    if not wait_ms:
        return 0.0
    started = time.perf_counter()
    if os.environ.get("REFERENCE_WAIT_MODE") == "compute":
        until = started + wait_ms / 1000
        while time.perf_counter() < until:
            pass
    else:
        await asyncio.sleep(wait_ms / 1000)
    return (time.perf_counter() - started) * 1000


# rtdash's token lookup (runs.core.sql.find_token), as it reaches SQLite.
LOOKUP_SQL = (
    'SELECT t."id", t."team_id", t."prefix", t."last_used_at", t."expires_at", '
    't."revoked_at", t."requests_per_minute", (SELECT k.ciphertext FROM "runs_runtoolskey" k '
    "WHERE k.team_id = t.team_id AND k.is_default AND k.revoked_at IS NULL LIMIT 1), "
    'EXISTS (SELECT 1 FROM "runs_budget" b WHERE b.team_id = t.team_id) '
    'FROM "runs_gatewaytoken" t WHERE t.token_hash = ?'
)
# One thread for the database, as rtdash has (asgiref's thread for sync code).
_database_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1)
_database = threading.local()


def _record_sync(token_hash: str = "") -> int:
    """Look the token up (by `token_hash`, else REFERENCE_TOKEN_HASH), then insert a run row
    (a copy of the newest, every column bound); the new row's id."""
    if not hasattr(_database, "connection"):
        connection = sqlite3.connect(os.environ["REFERENCE_DATABASE"], isolation_level=None)
        connection.execute("PRAGMA synchronous=NORMAL")  # as rtdash's settings
        template = connection.execute('SELECT * FROM "runs_run" ORDER BY id DESC LIMIT 1')
        columns = [column[0] for column in template.description]
        row = dict(zip(columns, template.fetchone(), strict=True))
        del row["id"]
        names = ", ".join(f'"{name}"' for name in row)
        marks = ", ".join("?" * len(row))
        _database.connection = connection
        _database.insert = f'INSERT INTO "runs_run" ({names}) VALUES ({marks}) RETURNING id'  # noqa: S608 - names from the table
        _database.row = row
    token_hash = token_hash or os.environ["REFERENCE_TOKEN_HASH"]
    found = _database.connection.execute(LOOKUP_SQL, [token_hash])
    assert found.fetchone() is not None, "the token is not in the database"
    row = _database.row
    # As Django writes a datetime to SQLite: UTC, naive, space-separated.
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    row["started_at"] = row["heartbeat_at"] = str(now)
    return _database.connection.execute(_database.insert, list(row.values())).fetchone()[0]


async def _record() -> None:
    if os.environ.get("REFERENCE_DATABASE"):
        await asyncio.get_running_loop().run_in_executor(_database_thread, _record_sync)


# The run's completion, as the least a finish writes (status, usage, when).
FINISH_SQL = (
    'UPDATE "runs_run" SET "status" = ?, "input_tokens" = ?, "output_tokens" = ?, '
    '"finished_at" = ? WHERE "id" = ?'
)


def _finish_sync(run_id: int, usage: dict) -> None:
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    values = ["completed", usage.get("inputTokens"), usage.get("outputTokens"), str(now), run_id]
    _database.connection.execute(FINISH_SQL, values)


_finishing: set[asyncio.Future] = set()


def _sealer():
    from cryptography.fernet import Fernet

    # rtdash's key is not the hop's to open: the same work, on a key sealed here for the hop.
    fernet = Fernet(Fernet.generate_key())
    return fernet, fernet.encrypt(os.environ["REFERENCE_SEALED_KEY"].encode())


async def _required_open(body: bytes, presented: bytes) -> tuple[httpx.Response, list, int]:
    """The required hop up to the upstream's answer (its body unread): the body parsed, the
    token hashed, the run recorded, the key decrypted, the run sent. Returns the answer, the
    upstream's headers to pass on and the run's id."""
    global _sealed
    if _sealed is None:
        _sealed = _sealer()
    fernet, sealed = _sealed
    json.loads(body)
    token_hash = hashlib.sha256(presented).hexdigest()
    loop = asyncio.get_running_loop()
    run_id = await loop.run_in_executor(_database_thread, _record_sync, token_hash)
    key = fernet.decrypt(sealed).decode()
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    request = _upstream().build_request("POST", "/run", content=body, headers=headers)
    answer = await _upstream().send(request, stream=True)
    # The same response: the upstream's own headers, all but the hop's.
    passed = [(name, value) for name, value in answer.headers.raw if name.lower() not in _HOP]
    return answer, passed, run_id


def _is_stream(answer: httpx.Response) -> bool:
    return answer.headers.get("content-type", "").startswith("text/event-stream")


async def _read_whole(answer: httpx.Response) -> bytes:
    try:
        return await answer.aread()
    finally:
        await answer.aclose()


def _finish_later(run_id: int, content: bytes) -> None:
    """The run's row completed on the database thread, with the answer's usage; called once
    the response has left."""
    usage = json.loads(content).get("usage") or {}
    loop = asyncio.get_running_loop()
    finish = loop.run_in_executor(_database_thread, _finish_sync, run_id, usage)
    _finishing.add(finish)
    finish.add_done_callback(_finishing.discard)


async def required_app(scope, receive, send) -> None:
    """The `required` hop (see the module's docstring)."""
    if scope["type"] != "http" or await _answered_probe(scope, send):
        return
    body = await asgi_body(receive)
    presented = dict(scope["headers"]).get(b"x-api-key", b"")
    answer, passed, run_id = await _required_open(body, presented)
    if _is_stream(answer):
        try:
            await _relay_answer(answer, send, passed)
        finally:
            await answer.aclose()
        return
    content = await _read_whole(answer)
    length = (b"content-length", str(len(content)).encode())
    await send(
        {"type": "http.response.start", "status": answer.status_code, "headers": [*passed, length]}
    )
    await send({"type": "http.response.body", "body": content})
    _finish_later(run_id, content)


def _required_django_app():
    """The `required-django` hop (see the module's docstring)."""
    _configure_django()
    import django
    from django.core.handlers.asgi import ASGIHandler, ASGIRequest
    from django.http import HttpResponse, StreamingHttpResponse

    django.setup(set_prefix=False)
    writer = ASGIHandler()  # Django's own response writer (send_response)

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http" or await _answered_probe(scope, send):
            return
        request = ASGIRequest(scope, io.BytesIO(await asgi_body(receive)))
        presented = request.META.get("HTTP_X_API_KEY", "").encode()
        answer, passed, run_id = await _required_open(request.body, presented)
        if _is_stream(answer):
            response = StreamingHttpResponse(_relayed(answer), status=answer.status_code)
        else:
            content = await _read_whole(answer)
            response = HttpResponse(content, status=answer.status_code)
        for name, value in passed:
            response[name.decode("latin-1")] = value.decode("latin-1")
        try:
            await writer.send_response(response, send)
        finally:
            response.close()
        if not response.streaming:
            _finish_later(run_id, response.content)

    return app


_sealed = None
# Headers of one hop, or that the hop recomputes (rtdash's list: runs.gateway.views).
_HOP = frozenset(
    b"set-cookie connection keep-alive transfer-encoding content-length content-encoding date "
    b"server proxy-authenticate upgrade trailer".split()
)


async def bare_app(scope, receive, send) -> None:
    """POST /v1/run → upstream /run, answered as it comes back (a stream chunk by chunk)."""
    if scope["type"] != "http" or await _answered_probe(scope, send):
        return
    body = await asgi_body(receive)
    await _record()
    waited_ms = await _wait()
    key = dict(scope["headers"]).get(b"x-api-key", b"").decode()
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    request = _upstream().build_request("POST", "/run", content=body, headers=headers)
    answer = await _upstream().send(request, stream=True)
    headers = [
        (b"content-type", answer.headers.get("content-type", "").encode()),
        (b"x-reference-waited-ms", f"{waited_ms:.3f}".encode()),
    ]
    try:
        await _relay_answer(answer, send, headers)
    finally:
        await answer.aclose()


async def _answered_probe(scope, send) -> bool:
    """Answer the harness's "is it up?" probe (any request but a POST) with a 204; whether
    this was one. A hop that recorded it would find no run yet to copy."""
    if scope["method"] == "POST":
        return False
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
    return True


async def _relay_answer(answer: httpx.Response, send, headers: list) -> None:
    """The upstream's answer, with `headers`, sent on as it comes (a stream chunk by chunk)."""
    await send({"type": "http.response.start", "status": answer.status_code, "headers": headers})
    async for chunk in answer.aiter_raw():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def relay_app(scope, receive, send) -> None:
    """ws://…/ws/playground/: `{"action": "start", "form": …}` → the run's frames, relayed."""
    if scope["type"] == "http":
        await _answered_probe(scope, send)
        return
    runs: list[asyncio.Task] = []
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif message["type"] == "websocket.disconnect":
                return
            elif message["type"] == "websocket.receive":
                start = json.loads(message.get("text") or "{}")
                if start.get("action") == "start":
                    runs.append(asyncio.ensure_future(_relay_run(start["form"], send, len(runs))))
    finally:
        for task in runs:
            task.cancel()


async def _relay_run(form: dict, send, number: int) -> None:
    metadata = {
        key: json.loads(value)
        for key, value in zip(form["meta_key"], form["meta_value"], strict=True)
    }
    body = {"agent": form["agent"], "prompt": form["prompt"], "stream": True, "metadata": metadata}
    request = _upstream().build_request("POST", "/run", json=body)
    answer = await _upstream().send(request, stream=True)
    await send({"type": "websocket.send", "text": json.dumps({"type": "started", "run": number})})
    sequence, pending = 0, b""
    try:
        async for chunk in answer.aiter_raw():
            *blocks, pending = (pending + chunk).split(b"\n\n")
            frames = []
            for block in blocks:
                fields = dict(line.split(": ", 1) for line in block.decode().splitlines())
                sequence += 1
                frames.append([sequence, fields.get("event", "message"), fields.get("data", "")])
            if frames:
                text = json.dumps({"type": "frames", "frames": frames})
                await send({"type": "websocket.send", "text": text})
    finally:
        await answer.aclose()
    finished = {"type": "finished", "status": "completed" if answer.is_success else "failed"}
    await send({"type": "websocket.send", "text": json.dumps(finished)})


def _configure_django() -> None:
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="reference-only",  # noqa: S106 - a throwaway benchmark process
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        ],
    )


def _django_app():
    _configure_django()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


async def run_view(request):
    """POST /v1/run → upstream /run, as the bare hop forwards it: a stream chunk by chunk
    (Django's streaming response), anything else read whole."""
    from django.http import HttpResponse, StreamingHttpResponse

    await _wait()
    key = request.headers.get("X-API-Key", "")
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    forwarded = _upstream().build_request("POST", "/run", content=request.body, headers=headers)
    answer = await _upstream().send(forwarded, stream=True)
    content_type = answer.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        relayed = _relayed(answer)
        return StreamingHttpResponse(relayed, status=answer.status_code, content_type=content_type)
    try:
        content = await answer.aread()
    finally:
        await answer.aclose()
    return HttpResponse(content, status=answer.status_code, content_type=content_type)


async def _relayed(answer: httpx.Response):
    try:
        async for chunk in answer.aiter_raw():
            yield chunk
    finally:
        await answer.aclose()


def _urlpatterns():
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    return [path("v1/run", csrf_exempt(run_view))]


def __getattr__(name: str):
    # Django reads `urlpatterns` from ROOT_URLCONF (this module) only in the `django` server.
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


class ReferenceServer(ServerProcess):
    """One reference proxy in a subprocess (uvicorn), in front of `upstream_url`."""

    def __init__(
        self,
        kind: str,
        upstream_url: str,
        wait_ms: float = 0,
        wait_mode: str = "sleep",
        *,
        database: str = "",
        token_hash: str = "",
        sealed_key: str = "",
    ) -> None:
        super().__init__()
        self.kind, self.upstream_url = kind, upstream_url
        self.wait_ms, self.wait_mode = wait_ms, wait_mode
        self.database, self.token_hash, self.sealed_key = database, token_hash, sealed_key
        self.what = f"the {kind} reference proxy"

    @property
    def url(self) -> str:
        return self.root

    def __enter__(self) -> ReferenceServer:
        self.port = free_port()
        command = [sys.executable, "-m", "bench.reference", self.kind, str(self.port)]
        env = {
            **os.environ,
            "REFERENCE_UPSTREAM": self.upstream_url,
            "REFERENCE_WAIT_MS": str(self.wait_ms),
            "REFERENCE_WAIT_MODE": self.wait_mode,
            "REFERENCE_DATABASE": self.database,
            "REFERENCE_TOKEN_HASH": self.token_hash,
            "REFERENCE_SEALED_KEY": self.sealed_key,
        }
        self.spawn(command, "/", env)
        return self


def main() -> None:
    import uvicorn

    kind, port = sys.argv[1], int(sys.argv[2])
    app = {
        "django": _django_app,
        "relay": lambda: relay_app,
        "required": lambda: required_app,
        "required-django": _required_django_app,
    }.get(kind, lambda: bare_app)()
    uvicorn.run(
        app,
        host=HOST,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # As rtdash is deployed (docs/deployment.md).
        ws="websockets-sansio",
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
