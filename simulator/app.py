"""The simulator's ASGI application: routing, auth, envelopes, and the non-run endpoints."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import persist
from .accounts import Accounts
from .agents import AGENTS, MODELS, Agent, find_agent
from .faults import Faults, parse_faults
from .records import OrgRecords
from .routing import ROUTES, Reply, route
from .runs import StreamResponse, handle_run, simulated_error, wait_for_disconnect
from .store import KeyStore, Store, Thread, page_events, page_threads, parse_limit
from .web import (
    ApiError,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    bad_request,
    dumps,
    error_response,
    not_found,
    ok,
)

logger = logging.getLogger("simulator")

DEFAULT_KEYS = ("rt_test_demo",)
# Advertised, never enforced: the contract calls these headers optional, and a simulator that
# throttled would make benchmarks measure the throttle. Use metadata.simulate.status 429.
RATE_LIMIT = 1000


# Billing lives on its own host upstream; on the simulator's main port it is served under this
# prefix, so its base URL is `<root>/billing/v1` (or `<billing root>/v1` with --billing-port).
BILLING_PREFIX = "/billing"
SIMULATE_HEADER = "x-simulate"
SAVE_DELAY = 0.5  # seconds between a change and its save to the --store file


def split_keys(raw: str) -> tuple[str, ...]:
    return tuple(key.strip() for key in raw.split(",") if key.strip())


def keys_from_env() -> tuple[str, ...]:
    return split_keys(os.environ.get("SIM_API_KEYS", "")) or DEFAULT_KEYS


def admin_keys_from_env() -> tuple[str, ...] | None:
    raw = os.environ.get("SIM_ADMIN_KEYS")
    return split_keys(raw) if raw is not None else None


@dataclass
class ArmedFault:
    """Faults a test armed for the next `times` requests of one key to a path."""

    path: str  # matched against the end of the request's path, whichever base it came on
    method: str | None
    times: int
    faults: Faults


class SimulatorApp:
    def __init__(
        self,
        keys: Iterable[str] = DEFAULT_KEYS,
        *,
        admin_keys: Iterable[str] | None = None,
        store_path: str | Path | None = None,
        billing_port: int | None = None,
    ) -> None:
        self.keys = frozenset(keys)
        self.accounts = Accounts(keys, admin_keys)
        self.store = Store()
        self.records = OrgRecords()
        self.billing_port = billing_port
        self.armed: dict[str, list[ArmedFault]] = {}  # key -> faults armed by a test
        self._windows: dict[str, tuple[int, int]] = {}  # key -> (minute, requests in it)
        self.store_path = Path(store_path) if store_path else None
        self._save_pending = False
        if self.store_path is not None and self.store_path.exists():
            persist.load(self, self.store_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, on_shutdown=self.flush)
            return
        if scope["type"] != "http":
            return
        scope = self._billing_host(scope)
        request = Request(scope, receive)
        try:
            reply = await self._dispatch(request)
        except ApiError as error:
            reply = error_response(request.request_id, error)
        except Exception:
            # Logged with its traceback, then answered in the upstream's own 500 envelope.
            logger.exception("unhandled error in %s %s", request.method, request.path)
            reply = error_response(request.request_id, ApiError(500, "internal error"))
        if reply is None:
            return  # the client left during a simulated hang
        self._decorate(reply, request)
        try:
            await reply(send, receive)
        finally:
            # Any request may change state (even a lookup completes a registered run).
            self._schedule_save()

    def _schedule_save(self) -> None:
        """Save within SAVE_DELAY of a change, at most once per SAVE_DELAY.

        Writing the whole state after every request doubled the time of the demo's seed; a
        delayed save costs a crash at most SAVE_DELAY of changes, and `flush()` runs on every
        orderly stop.
        """
        if self.store_path is None or self._save_pending:
            return
        self._save_pending = True
        asyncio.get_running_loop().call_later(SAVE_DELAY, self.flush)

    def flush(self) -> None:
        """Write the state to the --store file now (a no-op without one)."""
        self._save_pending = False
        if self.store_path is not None:
            persist.save(self, self.store_path)

    def _billing_host(self, scope: Scope) -> Scope:
        """On the billing port, `/v1/billing/...` is billing and nothing else exists."""
        if self.billing_port is None:
            return scope
        server = scope.get("server") or (None, None)
        if server[1] != self.billing_port:
            return scope
        path = str(scope["path"])
        if path.startswith("/v1/billing/") or path == "/healthz":
            inner = BILLING_PREFIX + path if path != "/healthz" else path
        else:
            inner = "/not-billing" + path  # no route: a 404 in the upstream's envelope
        return {**scope, "path": inner}

    async def _dispatch(self, request: Request) -> Reply:
        matched = [r for r in ROUTES if r.pattern.match(request.path)]
        needs_auth = request.path.startswith(("/v1/", "/billing/")) or any(r.auth for r in matched)
        if needs_auth:
            request.api_key = self._authenticate(request)
            if await self._simulate(request):
                return None  # the client left during a simulated hang
        if not matched:
            raise not_found(f"no route for {request.path}")
        found = matched[0]
        handler = found.handlers.get(request.method)
        if handler is None:
            allowed = ", ".join(sorted(found.handlers))
            raise ApiError(
                405,
                f"method {request.method} is not allowed on {request.path}",
                headers=[("allow", allowed)],
            )
        match = found.pattern.match(request.path)
        assert match is not None
        request.params = match.groupdict()
        return await handler(self, request, self.store.for_key(request.api_key))

    async def _simulate(self, request: Request) -> bool:
        """Request-level faults (X-Simulate header, or armed by a test): hang, then a status.

        True when the client hung up during a simulated hang.
        """
        faults = self._request_faults(request)
        if faults is None:
            return False
        if faults.hang_seconds:
            await request.body()  # read first, so the handler still has the body after the hang
            if await wait_for_disconnect(request.receive, faults.hang_seconds):
                return True
        if faults.status is not None:
            raise simulated_error(faults)
        return False

    def _request_faults(self, request: Request) -> Faults | None:
        raw = request.header(SIMULATE_HEADER)
        if raw is not None:
            try:
                spec = json.loads(raw)
            except ValueError as exc:
                raise bad_request(f"the X-Simulate header is not JSON: {exc}") from exc
            return parse_faults({"simulate": spec})
        for armed in self.armed.get(request.api_key, []):
            if request.path.endswith(armed.path) and armed.method in (None, request.method):
                armed.times -= 1
                if armed.times <= 0:
                    self.armed[request.api_key].remove(armed)
                return armed.faults
        return None

    def _authenticate(self, request: Request) -> str:
        key = request.header("x-api-key")
        if not key:
            scheme, _, token = (request.header("authorization") or "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else ""
        if not key:
            raise ApiError(401, "missing API key: send X-API-Key or Authorization: Bearer")
        if not key.startswith("rt_") or key not in self.keys:
            raise ApiError(401, "invalid API key", code="invalid_token")
        return key

    def _decorate(self, reply: Response | StreamResponse, request: Request) -> None:
        """Request id and rate-limit headers on every reply, unless the reply set its own."""
        present = {name for name, _ in reply.headers}
        extra = [("x-request-id", request.request_id)]
        if request.api_key:
            minute = int(time.time()) // 60
            window, used = self._windows.get(request.api_key, (minute, 0))
            used = used + 1 if window == minute else 1
            self._windows[request.api_key] = (minute, used)
            extra += [
                ("x-ratelimit-limit", str(RATE_LIMIT)),
                ("x-ratelimit-remaining", str(max(0, RATE_LIMIT - used))),
                ("x-ratelimit-reset", str((minute + 1) * 60)),
            ]
        reply.headers += [(name, value) for name, value in extra if name not in present]


async def _lifespan(receive: Receive, send: Send, on_shutdown: Callable[[], None]) -> None:
    # uvicorn's graceful stop (SIGTERM, Ctrl-C) ends here, so the --store file gets the last
    # changes: uvicorn re-raises the signal after serving, so code after Server.run never runs.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


# --- health, agents, models -------------------------------------------------------------------


@route("/healthz", "GET", auth=False)
async def healthz(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    return Response(200, dumps({"ok": True}))


@route("/v1/agents", "GET")
async def list_agents(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    return ok(request, [agent.to_json() for agent in AGENTS])


@route("/v1/agents/{slug}", "GET")
async def get_agent(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    agent = find_agent(request.params["slug"])
    if agent is None:
        raise not_found(f"agent {request.params['slug']!r} not found")
    return ok(request, agent.to_json())


@route("/v1/models/available", "GET")
async def models_available(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    return ok(request, MODELS)


# --- runs -----------------------------------------------------------------------------------


@route("/v1/run", "POST")
async def run(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    account = app.accounts.get(request.api_key)
    return await handle_run(request, keys, app.records, account)


@route("/v1/agents/{slug}/run", "POST")
async def legacy_run(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    account = app.accounts.get(request.api_key)
    return await handle_run(request, keys, app.records, account, agent_slug=request.params["slug"])


# --- agent-scoped thread helpers ------------------------------------------------------------


def _agent_param(request: Request) -> Agent:
    slug = request.query("agent")
    if not slug:
        raise bad_request("the agent query parameter is required")
    agent = find_agent(slug)
    if agent is None:
        raise not_found(f"agent {slug!r} not found")
    return agent


def _thread_detail(thread: Thread) -> dict[str, Any]:
    return {"thread": thread.to_json(), "events": [e.to_json() for e in thread.events]}


@route("/v1/run/threads", "GET")
async def list_run_threads(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    agent = _agent_param(request)
    return ok(request, [t.to_json() for t in keys.newest_first(agent)])


def _agent_thread(request: Request, keys: KeyStore) -> Thread:
    agent = _agent_param(request)
    thread = keys.threads.get(request.params["thread_id"])
    # Another agent's thread is as invisible as a missing one.
    if thread is None or thread.agent is not agent:
        raise not_found(f"thread {request.params['thread_id']!r} not found for {agent.slug}")
    return thread


@route("/v1/run/threads/{thread_id}", "GET")
async def get_run_thread(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    return ok(request, _thread_detail(_agent_thread(request, keys)))


@route("/v1/run/threads/{thread_id}", "DELETE")
async def delete_run_thread(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    thread = _agent_thread(request, keys)
    del keys.threads[thread.id]
    return ok(request, {"id": thread.id, "deleted": True})


# --- canonical thread API -------------------------------------------------------------------


def _thread(request: Request, keys: KeyStore) -> Thread:
    thread = keys.threads.get(request.params["thread_id"])
    if thread is None:
        raise not_found(f"thread {request.params['thread_id']!r} not found")
    return thread


@route("/v1/threads", "GET")
async def list_threads(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    limit = parse_limit(request.query("limit"), default=50, maximum=100)
    archived_raw = request.query("archived")
    if archived_raw not in (None, "true", "false"):
        raise bad_request("archived must be true or false")
    archived = archived_raw == "true"
    threads = [t for t in keys.newest_first() if t.archived is archived]
    page, next_cursor = page_threads(threads, limit, request.query("cursor"))
    data = [t.to_json() for t in page]
    # This list puts its paging in `meta`; the events list puts it at the top level.
    return ok(request, data, hasMore=next_cursor is not None, nextCursor=next_cursor)


@route("/v1/threads/{thread_id}", "GET")
async def get_thread(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    return ok(request, _thread_detail(_thread(request, keys)))


@route("/v1/threads/{thread_id}", "PATCH")
async def patch_thread(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    thread = _thread(request, keys)
    body = await request.json_object()
    title, archived = body.get("title"), body.get("archived")
    if title is not None and (not isinstance(title, str) or not title.strip() or len(title) > 200):
        raise bad_request("title must be a non-empty string of at most 200 characters")
    if archived is not None and not isinstance(archived, bool):
        raise bad_request("archived must be a boolean")
    if title is not None:
        thread.title = title
    if archived is not None:
        thread.archived = archived
    keys.touch(thread)
    return ok(request, thread.to_json())


@route("/v1/threads/{thread_id}", "DELETE")
async def delete_thread(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    del keys.threads[_thread(request, keys).id]
    return Response(204, content_type=None)


@route("/v1/threads/{thread_id}/events", "GET")
async def thread_events(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    thread = _thread(request, keys)
    limit = parse_limit(request.query("limit"), default=50, maximum=500)
    page, next_cursor = page_events(thread.events, limit, request.query("cursor"))
    body = {
        "data": [e.to_json() for e in page],
        # Top-level paging on purpose: the contract says clients must read both places.
        "hasMore": next_cursor is not None,
        "nextCursor": next_cursor,
        "meta": {"requestId": request.request_id},
    }
    return Response(200, dumps(body))


# --- faults armed by a test, for requests it does not make itself ----------------------------


@route("/_simulate/faults", "POST")
async def arm_faults(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    """Arm `simulate` for this key's next `times` requests whose path ends with `path`.

    For a test whose request is made by rtdash (a reconciliation job, a billing page), where
    no X-Simulate header can be added.
    """
    body = await request.json_object()
    path, method, times = body.get("path"), body.get("method"), body.get("times", 1)
    if not isinstance(path, str) or not path.startswith("/"):
        raise bad_request("path must be a string starting with /")
    if method is not None and method not in ("GET", "POST", "PATCH", "DELETE"):
        raise bad_request("method must be GET, POST, PATCH or DELETE")
    if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= 1000:
        raise bad_request("times must be an integer between 1 and 1000")
    faults = parse_faults({"simulate": body.get("simulate")})
    app.armed.setdefault(request.api_key, []).append(ArmedFault(path, method, times, faults))
    return ok(request, {"path": path, "method": method, "times": times}, status=201)


@route("/_simulate/faults", "DELETE")
async def disarm_faults(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    app.armed.pop(request.api_key, None)
    return Response(204, content_type=None)


# The endpoint modules register their routes on import.
from . import billing, lookups  # noqa: E402, F401


def create_app(keys: Iterable[str] | None = None) -> SimulatorApp:
    return SimulatorApp(
        keys if keys is not None else keys_from_env(),
        admin_keys=admin_keys_from_env(),
        store_path=os.environ.get("SIM_STORE") or None,
    )


# For `uvicorn simulator.app:app` / `daphne simulator.app:app`; keys from SIM_API_KEYS.
app = create_app()
