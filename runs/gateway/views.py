"""The drop-in RunTools API: same paths, bodies, envelopes and streams, recorded.

A team's scripts change two things, the base URL and the key (an rtdash token), and get what
RunTools would have given them. The caller's credential is never forwarded: the team's
default RunTools key is put on the outbound request, and the upstream host comes only from
settings.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from rtdash.gateway_handler import send_deferred_request_started
from runs.core import sql as fastsql
from runs.core import upstream
from runs.core.audit import record
from runs.core.crypto import KeyDecryptionError, SealedKey
from runs.core.ratelimit import CacheUnavailable
from runs.core.validation import (
    DOT_SEGMENTS,
    InvalidRequest,
    RunRequest,
    loads_strict,
    parse_body,
    validate_run,
)
from runs.history.threads import forget_thread_content
from runs.models import (
    Budget,
    GatewayToken,
    Run,
    RunToolsKey,
    Source,
    Team,
    Thread,
    hash_token,
)
from runs.pipeline.budgets import BudgetExceeded, enforce_budget
from runs.pipeline.reader import IN_FLIGHT, READERS, RunReader, Sink
from runs.pipeline.recording import (
    RunOutcome,
    error_outcome,
    finish_run,
    json_outcome,
    start_run,
    storable,
)

logger = logging.getLogger(__name__)

# Response headers that belong to one hop, or that rtdash recomputes.
HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "date",
        "server",
        "proxy-authenticate",
        "upgrade",
        "trailer",
    }
)
# A client that stops reading without hanging up is cut loose past this much queued data, so
# the run keeps being read and recorded without rtdash holding an unbounded backlog.
MAX_CLIENT_BACKLOG_BYTES = 16 * 1024 * 1024
TOKEN_TOUCH_INTERVAL = timedelta(seconds=60)


class GatewayError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, **extra) -> JsonResponse:
    """An error in RunTools' own envelope, so SDKs handle rtdash's errors like upstream's."""
    body = {"error": {"code": code, "message": message, "requestId": _request_id(), **extra}}
    return JsonResponse(body, status=status)


def _request_id() -> str:
    return "req_rtd_" + secrets.token_hex(8)


def _credential(request: HttpRequest) -> str:
    key = request.headers.get("X-API-Key", "").strip()
    if key:
        return key
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


@dataclass
class Caller:
    token: GatewayToken
    team: Team
    # Still encrypted: opened only inside runs.core.upstream, on the outbound request.
    runtools_key: SealedKey
    run: Run | None = None


def _check_rate(token: GatewayToken) -> None:
    if not token.requests_per_minute:
        return
    window = int(time.time() // 60)
    counter = f"rtdash:gateway-rate:{token.pk}:{window}"
    try:
        cache.add(counter, 0, timeout=120)
        used = cache.incr(counter)
    except CacheUnavailable:
        # Redis is down: serving the run unmetered beats refusing every request.
        logger.warning("Cache unavailable: token %s is not rate limited", token.prefix)
        return
    if used > token.requests_per_minute:
        retry_after = 60 - int(time.time() % 60)
        raise GatewayError(
            429,
            "rate_limited",
            f"This token allows {token.requests_per_minute} requests per minute.",
            {"Retry-After": str(retry_after)},
        )


TOKEN_FIELDS = (
    "id",
    "team",
    "prefix",
    "last_used_at",
    "expires_at",
    "revoked_at",
    "requests_per_minute",
)


@functools.cache
def _token_sql() -> str:
    token, key, budget = (m._meta.db_table for m in (GatewayToken, RunToolsKey, Budget))
    return (
        "SELECT t.id, t.team_id, t.prefix, t.last_used_at, t.expires_at, t.revoked_at, "  # noqa: S608 - table names from models, the value is bound
        "t.requests_per_minute, "
        f"(SELECT k.ciphertext FROM {key} k WHERE k.team_id = t.team_id AND k.is_default "
        "AND k.revoked_at IS NULL LIMIT 1), "
        f"EXISTS (SELECT 1 FROM {budget} b WHERE b.team_id = t.team_id) "
        f"FROM {token} t WHERE t.token_hash = %s"
    )


def _find_token(token_hash: str) -> GatewayToken | None:
    """The token, its team's default key and whether the team has budgets, in one query.

    Every gateway request starts here, so it is written in SQL: the ORM spent ~1 ms compiling
    the equivalent queryset (select_related, a subquery and an EXISTS) on every request.
    """
    token = fastsql.select_one(GatewayToken, _token_sql(), [token_hash], TOKEN_FIELDS)
    if token is not None:
        token.default_key_ciphertext, has_budget = token.extra
        token.has_budget = bool(has_budget)
    return token


def _authorize(
    plaintext: str, run_request: RunRequest | None = None, legacy: bool = False
) -> Caller:
    """Token → team → the team's default key, sealed (and the Run row, for run requests)."""
    if not plaintext:
        raise GatewayError(401, "unauthorized", "Send an rtdash token in X-API-Key.")
    token = _find_token(hash_token(plaintext))
    if token is None or not token.is_usable():
        raise GatewayError(401, "invalid_token", "The token is unknown, revoked or expired.")
    _check_rate(token)
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > TOKEN_TOUCH_INTERVAL:
        # At most one write a minute per token, not one per request.
        GatewayToken.objects.filter(pk=token.pk).update(last_used_at=now)
    if token.default_key_ciphertext is None:
        raise GatewayError(
            503, "no_runtools_key", "The team has no RunTools key; an owner can add one."
        )
    runtools_key = SealedKey(token.default_key_ciphertext)
    try:
        # Checked now so an unreadable key refuses the request before a run is recorded.
        runtools_key.check()
    except KeyDecryptionError:
        raise GatewayError(
            503, "runtools_key_unreadable", "The team's RunTools key cannot be decrypted."
        ) from None
    team = Team(pk=token.team_id)
    caller = Caller(token=token, team=team, runtools_key=runtools_key)
    if run_request is not None:
        if token.has_budget:
            try:
                enforce_budget(Team.objects.get(pk=token.team_id), run_request.agent)
            except BudgetExceeded as exceeded:
                raise GatewayError(402, exceeded.code, exceeded.message) from None
        caller.run = start_run(
            team, run_request, source=Source.GATEWAY, token=token, legacy_path=legacy
        )
    return caller


def _authorize_request(
    request: HttpRequest, run_request: RunRequest | None = None, legacy: bool = False
) -> Caller:
    """The gateway view's first step in the sync thread: the request's start (deferred to
    here, see rtdash.gateway_handler), then its token."""
    send_deferred_request_started(request)
    return _authorize(_credential(request), run_request, legacy)


def _read_body(request: HttpRequest) -> bytes:
    limit = settings.RTDASH_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise InvalidRequest("body", f"The request body is larger than {limit} bytes.", 413)
    try:
        return request.body
    except RequestDataTooBig:
        raise InvalidRequest(
            "body", f"The request body is larger than {limit} bytes.", 413
        ) from None


def _copy_headers(source, response: HttpResponse) -> None:
    for name, value in source.headers.multi_items():
        if name.lower() not in HOP_HEADERS:
            response[name] = value


def _passthrough(response, body: bytes, run_id: int | None = None) -> HttpResponse:
    result = HttpResponse(body, status=response.status_code)
    _copy_headers(response, result)
    if run_id is not None:
        result["X-Rtdash-Run-Id"] = str(run_id)
    return result


class ClientSink(Sink):
    """Feeds the gateway's streaming response; survives the client leaving."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.attached = True
        self.backlog = 0

    async def chunk(self, data: bytes) -> None:
        if not self.attached:
            return
        self.backlog += len(data)
        if self.backlog > MAX_CLIENT_BACKLOG_BYTES:
            self.detach()
            return
        self.queue.put_nowait(data)

    async def end(self, outcome: RunOutcome, injected: bytes | None) -> None:
        if self.attached and injected:
            self.queue.put_nowait(injected)
        self.queue.put_nowait(None)

    def detach(self) -> None:
        self.attached = False
        self.queue.put_nowait(None)

    async def body(self, reader: RunReader) -> AsyncIterator[bytes]:
        complete = False
        try:
            while (data := await self.queue.get()) is not None:
                self.backlog -= len(data)
                yield data
            complete = True
        finally:
            if not complete:
                # The client left mid-stream. By default keep reading so usage is recorded.
                self.attached = False
                if settings.RTDASH_CANCEL_ON_DISCONNECT:
                    reader.stop()


# Finishing tasks still running, held so they are not garbage-collected mid-write.
_FINISHING: set[asyncio.Task] = set()


async def settle() -> None:
    """Wait until every run this process is reading or finishing has its final record."""
    while _FINISHING or READERS:
        await asyncio.gather(*_FINISHING, *(reader.finished.wait() for reader in READERS.values()))


def _finish_after_response(run_id: int, outcome: RunOutcome) -> None:
    """Complete the run's record just after the response leaves.

    The Run row was committed before the request went upstream, so the run is in the history
    whatever happens; its completion (usage, thread, rollup: about 2.5 ms of ORM work on
    SQLite) need not delay the caller. A crash in between leaves it `running` for the reaper.
    """
    task = asyncio.ensure_future(sync_to_async(finish_run)(run_id, outcome))
    _FINISHING.add(task)
    task.add_done_callback(_FINISHING.discard)
    task.add_done_callback(lambda _task: IN_FLIGHT.discard(run_id))


def _invalid(problem: InvalidRequest) -> JsonResponse:
    code = "payload_too_large" if problem.status == 413 else "bad_request"
    return error_response(problem.status, code, problem.message, field=problem.field)


def _refused(problem: GatewayError) -> JsonResponse:
    response = error_response(problem.status, problem.code, problem.message)
    for name, value in problem.headers.items():
        response[name] = value
    return response


async def _run(request: HttpRequest, agent_from_path: str | None) -> HttpResponse:
    received = time.perf_counter()
    try:
        # An oversized body is refused before anything else, unread.
        raw = _read_body(request)
    except InvalidRequest as problem:
        return _invalid(problem)
    # Validated here (no I/O) but reported after authentication: strangers get a 401 and
    # learn nothing about what a valid body looks like.
    run_request, problem = None, None
    try:
        body = parse_body(raw, settings.RTDASH_MAX_BODY_BYTES)
        run_request = validate_run(body, raw, agent_from_path=agent_from_path)
    except InvalidRequest as invalid:
        problem = invalid
    legacy = agent_from_path is not None
    try:
        caller = await sync_to_async(_authorize_request)(request, run_request, legacy)
    except GatewayError as refused:
        return _refused(refused)
    if problem is not None:
        return _invalid(problem)
    run = caller.run
    path = upstream.endpoint("agents", agent_from_path, "run") if legacy else "/run"
    # Shielded: if the client hangs up, the run is still read to its end and recorded.
    return await asyncio.shield(
        asyncio.ensure_future(_forward_run(caller, run, path, run_request, received))
    )


async def _forward_run(
    caller: Caller, run: Run, path: str, run_request: RunRequest, received: float
) -> HttpResponse:
    IN_FLIGHT.add(run.pk)
    sent = time.perf_counter()
    # rtdash's own share of the run's time: the request's receipt to its send upstream.
    overhead_ms = (sent - received) * 1000
    accept = "text/event-stream" if run_request.stream else "application/json"
    try:
        response = await upstream.open_stream(
            caller.runtools_key, "POST", path, content=run_request.body, accept=accept
        )
    except upstream.UpstreamError as problem:
        outcome = RunOutcome(overhead_ms=overhead_ms)
        outcome.fail(problem.code, problem.message)
        _finish_after_response(run.pk, outcome)
        return error_response(problem.status, problem.code, problem.message)
    is_stream = response.headers.get("content-type", "").startswith("text/event-stream")
    if response.status_code == 200 and is_stream:
        return _stream(run, response, overhead_ms)
    try:
        body = await response.aread()
    except httpx.HTTPError as error:
        problem = upstream.translate(error)
        outcome = RunOutcome(http_status=response.status_code, overhead_ms=overhead_ms)
        outcome.fail(problem.code, problem.message)
        _finish_after_response(run.pk, outcome)
        return error_response(problem.status, problem.code, problem.message)
    finally:
        await response.aclose()
    returned = time.perf_counter()
    if response.status_code >= 400:
        outcome = error_outcome(response, body)
    else:
        outcome = json_outcome(response, body)
    outcome.upstream_ms = (returned - sent) * 1000
    outcome.overhead_ms = overhead_ms
    _finish_after_response(run.pk, outcome)
    return _passthrough(response, body, run.pk)


def _stream(run: Run, response, overhead_ms: float) -> StreamingHttpResponse:
    sink = ClientSink()
    reader = RunReader(run.pk, response, [sink])
    reader.outcome.overhead_ms = overhead_ms
    reader.start()
    streamed = StreamingHttpResponse(sink.body(reader), status=200)
    _copy_headers(response, streamed)
    streamed["Cache-Control"] = "no-cache"
    # Tell proxies such as nginx not to buffer the stream.
    streamed["X-Accel-Buffering"] = "no"
    streamed["X-Rtdash-Run-Id"] = str(run.pk)
    return streamed


@csrf_exempt
async def run(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return error_response(405, "method_not_allowed", "Use POST.")
    return await _run(request, None)


@csrf_exempt
async def legacy_run(request: HttpRequest, slug: str) -> HttpResponse:
    if request.method != "POST":
        return error_response(405, "method_not_allowed", "Use POST.")
    return await _run(request, slug)


async def _proxy(
    request: HttpRequest,
    segments: tuple[str, ...],
    allowed: tuple[str, ...],
    *,
    on_success=None,
    json_body: bool = False,
) -> HttpResponse:
    """Forward a non-run request unchanged, with the team's key in place of the token.

    `segments` make the upstream path (ids among them are encoded whole, see
    `upstream.endpoint`); `json_body` has the body checked by the strict parser first.
    """
    if request.method not in allowed:
        return error_response(405, "method_not_allowed", f"Use {' or '.join(allowed)}.")
    try:
        caller = await sync_to_async(_authorize_request)(request)
    except GatewayError as refused:
        return _refused(refused)
    if any(segment in DOT_SEGMENTS for segment in segments):
        # `.` and `..` are path steps, not ids: sent on, they would reach another endpoint.
        return error_response(400, "bad_request", "An id cannot be '.' or '..'.")
    content = None
    if request.method in ("POST", "PATCH", "PUT"):
        try:
            content = _read_body(request)
            if json_body:
                loads_strict(content, "body")
        except InvalidRequest as problem:
            return _invalid(problem)
    params = [(name, value) for name, values in request.GET.lists() for value in values]
    try:
        response = await upstream.call(
            caller.runtools_key,
            request.method,
            upstream.endpoint(*segments),
            content=content,
            params=params or None,
        )
    except upstream.UpstreamError as problem:
        return error_response(problem.status, problem.code, problem.message)
    if on_success is not None and response.status_code < 300:
        await sync_to_async(on_success)(caller, content)
    return _passthrough(response, response.content)


def _mark_thread_deleted(thread_id: str):
    def mark(caller: Caller, content: bytes | None) -> None:
        # The thread's prompts, results and frames go; its runs keep their usage and cost.
        forget_thread_content(caller.team, storable(thread_id))
        record(
            None,
            "thread_deleted",
            caller.team,
            target=f"thread {storable(thread_id)[:100]} (through the gateway)",
            actor_label=f"token {caller.token.prefix}…",
        )

    return mark


def _mark_thread_patched(thread_id: str):
    def mark(caller: Caller, content: bytes | None) -> None:
        try:
            changes = loads_strict(content or b"", "body")
        except InvalidRequest:
            return
        if not isinstance(changes, dict):
            return
        fields = {}
        if isinstance(changes.get("title"), str):
            fields["title"] = storable(changes["title"][:200])
        if isinstance(changes.get("archived"), bool):
            fields["archived"] = changes["archived"]
        if fields:
            Thread.objects.filter(team=caller.team, upstream_id=storable(thread_id)).update(
                **fields
            )

    return mark


@csrf_exempt
async def run_threads(request: HttpRequest) -> HttpResponse:
    return await _proxy(request, ("run", "threads"), ("GET",))


@csrf_exempt
async def run_thread(request: HttpRequest, thread_id: str) -> HttpResponse:
    on_success = _mark_thread_deleted(thread_id) if request.method == "DELETE" else None
    return await _proxy(
        request, ("run", "threads", thread_id), ("GET", "DELETE"), on_success=on_success
    )


@csrf_exempt
async def threads(request: HttpRequest) -> HttpResponse:
    return await _proxy(request, ("threads",), ("GET",))


@csrf_exempt
async def thread(request: HttpRequest, thread_id: str) -> HttpResponse:
    on_success = None
    if request.method == "DELETE":
        on_success = _mark_thread_deleted(thread_id)
    elif request.method == "PATCH":
        on_success = _mark_thread_patched(thread_id)
    return await _proxy(
        request,
        ("threads", thread_id),
        ("GET", "PATCH", "DELETE"),
        on_success=on_success,
        json_body=True,
    )


@csrf_exempt
async def thread_events(request: HttpRequest, thread_id: str) -> HttpResponse:
    return await _proxy(request, ("threads", thread_id, "events"), ("GET",))


@csrf_exempt
async def agents(request: HttpRequest) -> HttpResponse:
    return await _proxy(request, ("agents",), ("GET",))


@csrf_exempt
async def agent(request: HttpRequest, slug: str) -> HttpResponse:
    return await _proxy(request, ("agents", slug), ("GET",))


@csrf_exempt
async def not_proxied(request: HttpRequest, rest: str = "") -> HttpResponse:
    return error_response(404, "not_found", "rtdash does not proxy this path.")
