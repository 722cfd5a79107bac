"""The billing host: plan, credits, the credit ledger and usage, charged from the org's runs.

Upstream, billing lives on its own host (`https://billing.runtools.ai/v1`); rtdash reads its
base URL from `RUNTOOLS_BILLING_URL`. The simulator serves it under `/billing/v1` on its main
port, and with `--billing-port` also as `/v1` on a port of its own.

Every completed run is charged once, when it completes, from the prices in records.py; the
ledger entry's `referenceId` is the run id, so a ledger can be reconciled with the runs.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from .accounts import ORG_ID, Account
from .lookups import wants_all
from .records import FREE_CREDITS_CENTS, SANDBOX_SECONDS_PER_ITERATION, RunRecord
from .routing import Reply, route
from .store import KeyStore, parse_limit
from .web import Request, bad_request, ok

if TYPE_CHECKING:
    from .app import SimulatorApp

BASE = "/billing/v1/billing"
PLAN = "pro"
PERIODS = ("current", "7d", "30d", "all_time")
HISTORY_LIMIT_MAX = 500


@route(f"{BASE}/plan", "GET")
async def plan(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    records = app.records
    return ok(
        request,
        {
            "orgId": ORG_ID,
            "plan": PLAN,
            "balanceCents": records.balance_cents,
            "totalGrantedCents": records.total_granted_cents,
            "totalUsedCents": records.total_used_cents,
        },
    )


@route(f"{BASE}/credits", "GET")
async def credits(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    records = app.records
    used = records.total_used_cents
    return ok(
        request,
        {
            "balanceCents": records.balance_cents,
            "totalGrantedCents": records.total_granted_cents,
            "totalUsedCents": used,
            # [I] A number of cents: the free grant is spent first.
            "freeCreditsUsed": min(used, FREE_CREDITS_CENTS),
        },
    )


@route(f"{BASE}/credits/history", "GET")
async def credit_history(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    limit = parse_limit(request.query("limit"), default=50, maximum=HISTORY_LIMIT_MAX)
    newest_first = list(reversed(app.records.ledger))[:limit]
    return ok(request, [entry.to_json() for entry in newest_first])


def period_start(period: str, now: datetime.datetime) -> datetime.datetime | None:
    if period == "current":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if period == "all_time":
        return None
    return now - datetime.timedelta(days=int(period.removesuffix("d")))


def _iso(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def usage_row(user_id: str, runs: list[RunRecord]) -> dict[str, Any]:
    """One user's usage: the sums of their completed runs' usage and charges."""
    tokens = {"input": 0, "output": 0, "reasoning": 0, "cachedInput": 0, "total": 0}
    by_model: dict[str, dict[str, int]] = defaultdict(
        lambda: {"input": 0, "output": 0, "total": 0, "runs": 0, "costCents": 0}
    )
    sandbox_seconds = tool_count = 0
    for run in runs:
        usage = run.usage
        tokens["input"] += usage.get("inputTokens", 0)
        tokens["output"] += usage.get("outputTokens", 0)
        tokens["reasoning"] += usage.get("reasoningTokens", 0)
        tokens["cachedInput"] += usage.get("cachedInputTokens", 0)
        tokens["total"] += usage.get("totalTokens", 0)
        model = by_model[run.agent.model]
        model["input"] += usage.get("inputTokens", 0)
        model["output"] += usage.get("outputTokens", 0)
        model["total"] += usage.get("totalTokens", 0)
        model["runs"] += 1
        model["costCents"] += run.cost_cents
        if run.agent.in_sandbox:
            sandbox_seconds += run.iterations * SANDBOX_SECONDS_PER_ITERATION
        tool_count += len(run.tools)
    return {
        "userId": user_id,
        "runs": len(runs),
        "tokens": tokens,
        "modelUsage": dict(sorted(by_model.items())),
        # Reported, not charged: the simulator only charges inference.
        "sandboxRuntime": {"seconds": sandbox_seconds, "costCents": 0},
        "storageUsage": {"bytes": 0, "costCents": 0},
        "toolExecutions": {"count": tool_count, "costCents": 0},
        "resourceCharges": [],
        "costCents": sum(run.cost_cents for run in runs),
    }


@route(f"{BASE}/my-usage", "GET")
async def my_usage(app: SimulatorApp, request: Request, keys: KeyStore) -> Reply:
    account = app.accounts.get(request.api_key)
    period = request.query("period") or "current"
    if period not in PERIODS:
        raise bad_request(f"period must be one of {', '.join(PERIODS)}")
    everyone = wants_all(request, account)
    now = datetime.datetime.now(datetime.UTC)
    start = period_start(period, now)
    since = _iso(start) if start is not None else None
    completed = [
        r
        for r in app.records.newest_runs()
        if r.status == "completed"
        and r.completed_at is not None
        and (since is None or r.completed_at >= since)
    ]
    members: list[Account] = (
        sorted(app.accounts.by_key.values(), key=lambda a: a.user_id) if everyone else [account]
    )
    rows = [
        usage_row(member.user_id, [r for r in completed if r.key == member.key])
        for member in members
    ]
    scoped = [r for r in completed if everyone or r.key == account.key]
    return ok(
        request,
        {
            "period": period,
            "since": since,
            "until": _iso(now),
            "scope": "org" if everyone else "user",
            "rows": rows,
            "totals": usage_row(ORG_ID if everyone else account.user_id, scoped),
        },
    )
