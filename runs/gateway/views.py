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
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from rtdash.gateway_handler import after_response, send_deferred_request_started
from runs.core import sync_thread, upstream
from runs.core.audit import record
from runs.core.errors import GatewayError, error_response, refused_response
from runs.core.validation import (
    DOT_SEGMENTS,
    InvalidRequest,
    RunRequest,
    invalid_response,
    loads_strict,
    parse_body,
    read_body,
    validate_run,
)
from runs.gateway.auth import Caller, authenticate, credential
from runs.history.threads import forget_thread_content
from runs.models import Source, Team, Thread
from runs.pipeline.budgets import BudgetExceeded
from runs.pipeline.reader import RunReader, Sink
from runs.pipeline.recording import RunOutcome, storable
from runs.pipeline.start import Prepared, Receipt, prepare, send, settle

__all__ = ["error_response", "settle"]  # imported from here by rtdash's handler and tests

logger = logging.getLogger(__name__)

# Response headers that belong to one hop, or that rtdash recomputes; and Set-Cookie, which
# is RunTools' (or its load balancer's) for its own host: passed on, it would land in rtdash's
# origin, where it could overwrite rtdash's own session cookies in a browser.
HOP_HEADERS = frozenset(
    {
        "set-cookie",
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


def _prepare_run(
    request: HttpRequest, run_request: RunRequest | None, legacy: bool, receipt: Receipt
) -> tuple[Caller, Prepared | None]:
    """The gateway view's first step in the sync thread: the request's start (deferred to
    here, see rtdash.gateway_handler), its token and, for a valid run, the run's shared
    prepare step, given what the token query found (key and budget flag) so that the whole
    step is one trip to the database thread."""
    send_deferred_request_started(request)
    caller = authenticate(credential(request))
    if run_request is None:
        return caller, None
    token = caller.token
    team = Team.objects.get(pk=token.team_id) if token.has_budget else Team(pk=token.team_id)
    try:
        prepared = prepare(
            team,
            run_request,
            source=Source.GATEWAY,
            receipt=receipt,
            token_id=token.id,
            legacy_path=legacy,
            runtools_key=caller.runtools_key,
            has_budget=token.has_budget,
        )
    except BudgetExceeded as exceeded:
        raise GatewayError(402, exceeded.code, exceeded.message) from None
    return caller, prepared


def _authenticate_request(request: HttpRequest) -> Caller:
    send_deferred_request_started(request)
    return authenticate(credential(request))


def _read_body(request: HttpRequest) -> bytes:
    return read_body(request, settings.RTDASH_MAX_BODY_BYTES)


def _copy_headers(source, response: HttpResponse) -> None:
    """The upstream's end-to-end headers onto the response. A header sent more than once
    (`Vary`, `Link`) is sent as one, its values joined with commas, which HTTP defines as the
    same (RFC 9110, 5.3); Set-Cookie, the one header that cannot be joined, is not passed on."""
    copied: set[str] = set()
    for name, value in source.headers.multi_items():
        lowered = name.lower()
        if lowered in HOP_HEADERS:
            continue
        if lowered in copied:
            response[name] = f"{response[name]}, {value}"
        else:
            # Replaces what the response had (Django's default Content-Type).
            response[name] = value
            copied.add(lowered)


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

    def holding(self) -> bool:
        return self.attached and not self.queue.empty()

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


async def answer_run(request: HttpRequest, agent_from_path: str | None) -> HttpResponse:
    """A run's answer: refused, or recorded, sent upstream and answered as RunTools answered.

    Once recorded, the run is shielded from the request's task being cancelled (Django's
    handler cancels a view whose client hangs up; a server cancels what is still running when
    it shuts down or gives up on a departed client): it is still read to its end and
    recorded."""
    receipt = Receipt.now()
    try:
        # An oversized body is refused before anything else, unread.
        raw = _read_body(request)
    except InvalidRequest as problem:
        return invalid_response(problem)
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
        _caller, prepared = await sync_thread.call(
            _prepare_run, request, run_request, legacy, receipt
        )
    except GatewayError as refused:
        return refused_response(refused)
    if problem is not None:
        return invalid_response(problem)
    assert prepared is not None and run_request is not None
    path = upstream.endpoint("agents", agent_from_path, "run") if legacy else "/run"
    forwarding = _forward_run(request, prepared, run_request, path)
    return await asyncio.shield(asyncio.ensure_future(forwarding))


async def _forward_run(
    request: HttpRequest, prepared: Prepared, run_request: RunRequest, path: str
) -> HttpResponse:
    """The run's one path (runs.pipeline.start.send), answered as RunTools would."""
    sink = ClientSink()
    launched = await send(
        prepared,
        run_request,
        path=path,
        sinks=[sink],
        after_response=functools.partial(after_response, request),
    )
    run_id = launched.run.pk
    if launched.reader is not None:
        return _stream(run_id, launched.reader, sink)
    if launched.error is not None:
        problem = launched.error
        return error_response(problem.status, problem.code, problem.message)
    assert launched.response is not None
    return _passthrough(launched.response, launched.body, run_id)


def _stream(run_id: int, reader: RunReader, sink: ClientSink) -> StreamingHttpResponse:
    streamed = StreamingHttpResponse(sink.body(reader), status=200)
    _copy_headers(reader.response, streamed)
    streamed["Cache-Control"] = "no-cache"
    # Tell proxies such as nginx not to buffer the stream.
    streamed["X-Accel-Buffering"] = "no"
    streamed["X-Rtdash-Run-Id"] = str(run_id)
    return streamed


@csrf_exempt
async def run(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        # RunTools' list of recent runs (`?agent=&status=&limit=&all=`), as it answers it.
        return await _proxy(request, ("run",), ("GET",))
    if request.method != "POST":
        return error_response(405, "method_not_allowed", "Use POST or GET.")
    return await answer_run(request, None)


@csrf_exempt
async def upstream_run(request: HttpRequest, run_id: str) -> HttpResponse:
    """One run as RunTools tells it (`GET /v1/run/{id}`), by RunTools' own run id."""
    return await _proxy(request, ("run", run_id), ("GET",))


@csrf_exempt
async def legacy_run(request: HttpRequest, slug: str) -> HttpResponse:
    if request.method != "POST":
        return error_response(405, "method_not_allowed", "Use POST.")
    return await answer_run(request, slug)


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
        caller = await sync_to_async(_authenticate_request)(request)
    except GatewayError as refused:
        return refused_response(refused)
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
            return invalid_response(problem)
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
