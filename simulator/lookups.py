"""Reading runs back: the runs list, one run's lookup, and the activity log.

Runs and activity belong to the organisation; a key sees its own user's, and an admin key may
ask for everyone's (`all=true` on the runs list; the activity log shows admins the whole org).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from .accounts import Account
from .records import RUN_STATUSES, ActivityEvent
from .routing import Reply, route
from .store import KeyStore, decode_cursor, encode_cursor, parse_limit
from .web import ApiError, Request, Response, bad_request, dumps, not_found, ok

if TYPE_CHECKING:
    from .app import SimulatorApp

RUNS_LIMIT_MAX = 500
ACTIVITY_LIMIT_DEFAULT = 50
ACTIVITY_LIMIT_MAX = 100


def wants_all(request: Request, account: Account) -> bool:
    """`all=true` asks for every member's records, which only an org admin may see."""
    raw = request.query("all")
    if raw not in (None, "", "true", "false"):
        raise bad_request("all must be true or false")
    if raw == "true" and not account.admin:
        raise ApiError(403, "all=true needs an organisation admin's key")
    return raw == "true"


@route("/v1/run", "GET")
async def list_runs(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    account = app.accounts.get(request.api_key)
    everyone = wants_all(request, account)
    limit = parse_limit(request.query("limit"), default=50, maximum=RUNS_LIMIT_MAX)
    status = request.query("status")
    if status is not None and status not in RUN_STATUSES:
        raise bad_request(f"status must be one of {', '.join(RUN_STATUSES)}")
    agent = request.query("agent")
    runs = [
        r
        for r in app.records.newest_runs()
        if (everyone or r.user_id == account.user_id)
        and (status is None or r.status == status)
        and (not agent or agent in (r.agent.slug, r.agent.id))
    ]
    return ok(request, [r.summary() for r in runs[:limit]])


@route("/v1/run/{run_id}", "GET")
async def get_run(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    account = app.accounts.get(request.api_key)
    run_id = request.params["run_id"]
    record = app.records.runs.get(run_id)
    # Another member's run is as invisible as a missing one, except to an admin.
    if record is None or not (account.admin or record.user_id == account.user_id):
        raise not_found(f"run {run_id!r} not found")
    record = app.records.look_up(run_id)
    assert record is not None
    return ok(request, record.detail())


# --- activity ---------------------------------------------------------------------------------


def _timestamp(request: Request, name: str) -> str | None:
    """An ISO-8601 bound, normalised to the form createdAt takes so strings compare in order."""
    raw = request.query(name)
    if raw is None or raw == "":
        return None
    try:
        when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise bad_request(f"{name} must be an ISO-8601 timestamp") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    when = when.astimezone(datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _matches_type(event: ActivityEvent, wanted: str | None) -> bool:
    # An exact type, or a family: `agent.run` matches agent.run.started, agent.run.completed…
    return not wanted or event.event_type == wanted or event.event_type.startswith(wanted + ".")


def _activity_page(
    request: Request, events: list[ActivityEvent]
) -> tuple[list[ActivityEvent], str | None]:
    """Newest-first keyset pages: the cursor is the last sequence seen."""
    limit = parse_limit(
        request.query("limit"), default=ACTIVITY_LIMIT_DEFAULT, maximum=ACTIVITY_LIMIT_MAX
    )
    since, until = _timestamp(request, "since"), _timestamp(request, "until")
    before = decode_cursor("a", request.query("cursor"))
    wanted = request.query("event_type")
    rest = [
        e
        for e in reversed(events)
        if (before is None or e.sequence < before)
        and _matches_type(e, wanted)
        and (since is None or e.created_at >= since)
        and (until is None or e.created_at < until)
    ]
    page = rest[:limit]
    return page, encode_cursor("a", page[-1].sequence) if len(rest) > limit else None


def _activity_reply(request: Request, events: list[ActivityEvent]) -> Response:
    page, next_cursor = _activity_page(request, events)
    body = {
        "data": {"events": [e.to_json() for e in page]},
        "hasMore": next_cursor is not None,
        "nextCursor": next_cursor,
        "meta": {"requestId": request.request_id},
    }
    return Response(200, dumps(body))


def _visible(app: SimulatorApp, account: Account) -> list[ActivityEvent]:
    events = app.records.activity
    if account.admin:
        return events
    return [e for e in events if e.actor_user_id == account.user_id]


@route("/v1/activity", "GET")
async def activity(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    return _activity_reply(request, _visible(app, app.accounts.get(request.api_key)))


@route("/v1/threads/{thread_id}/activity", "GET")
async def thread_activity(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    thread_id = request.params["thread_id"]
    if thread_id not in keys.threads:
        raise not_found(f"thread {thread_id!r} not found")
    events = _visible(app, app.accounts.get(request.api_key))
    return _activity_reply(request, [e for e in events if e.thread_id == thread_id])
