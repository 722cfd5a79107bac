"""Reconciliation: RunTools' own usage and billing for a period, beside what rtdash recorded.

What RunTools says comes from its billing host (`my-usage`, `credits`, `credits/history`) and
its runs list, asked with the team's default key. What rtdash says comes from the team's runs.
The difference is explained by what can be listed: runs made with the key outside rtdash (ids
RunTools lists that rtdash never recorded), runs rtdash is still following, and runs with no
usage. Any upstream failure becomes a `Problem` in plain words; what could be read is still
shown, so the page never breaks because billing is down.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone

from runs.core import upstream
from runs.core.access import for_team
from runs.core.crypto import KeyDecryptionError, SealedKey
from runs.models import Run, Team

PERIODS = {"current": "This month (UTC)", "7d": "Last 7 days", "30d": "Last 30 days"}
# Bounds: RunTools' largest page of runs and of the ledger, how many outside runs are looked up
# for their tokens, and how many runs each list shows.
RUNS_PAGE = 500
LEDGER_PAGE = 500
OUTSIDE_LOOKUPS = 25
LISTED = 50


class InvalidPeriod(ValueError):
    pass


@dataclass
class Problem:
    """An upstream call that failed, in words a person can act on."""

    what: str  # "usage", "runs", "credits", "ledger"
    code: str
    message: str

    def as_dict(self) -> dict:
        return {"what": self.what, "code": self.code, "message": self.message}


@dataclass
class Tokens:
    input: int = 0
    output: int = 0
    total: int = 0
    runs: int = 0

    def as_dict(self) -> dict:
        return {"input": self.input, "output": self.output, "total": self.total, "runs": self.runs}


@dataclass
class OutsideRun:
    id: str
    agent: str
    user: str
    status: str
    created_at: str
    total_tokens: int | None = None

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "agent": self.agent,
            "userId": self.user,
            "status": self.status,
            "createdAt": self.created_at,
            "totalTokens": self.total_tokens,
        }


@dataclass
class RunCharge:
    """A ledger entry tied to a run rtdash recorded: what RunTools charged, what rtdash priced."""

    run_id: int
    upstream_run_id: str
    agent: str
    charged_cents: int
    rtdash_cost: Decimal | None
    cost_status: str

    @property
    def charged(self) -> Decimal:
        return Decimal(self.charged_cents) / 100

    def as_dict(self) -> dict:
        return {
            "run": self.run_id,
            "runId": self.upstream_run_id,
            "agent": self.agent,
            "chargedCents": self.charged_cents,
            "rtdashCost": str(self.rtdash_cost) if self.rtdash_cost is not None else None,
            "costStatus": self.cost_status,
        }


@dataclass
class Reconciliation:
    team: Team
    period: str
    since: datetime
    until: datetime
    scope: str = ""  # "org" (every member's usage) or "user" (the key's own)
    scope_note: str = ""
    upstream: Tokens | None = None
    recorded: Tokens = field(default_factory=Tokens)
    outside_runs: list[OutsideRun] = field(default_factory=list)
    outside_count: int = 0
    outside_tokens: int = 0
    following: list[dict] = field(default_factory=list)
    following_count: int = 0
    no_usage: list[dict] = field(default_factory=list)
    no_usage_count: int = 0
    balance_cents: int | None = None
    charged_cents: int | None = None
    recorded_cost: Decimal = Decimal(0)
    unpriced_runs: int = 0
    partial_runs: int = 0
    run_charges: list[RunCharge] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def balance(self) -> Decimal | None:
        return None if self.balance_cents is None else Decimal(self.balance_cents) / 100

    @property
    def charged(self) -> Decimal | None:
        return None if self.charged_cents is None else Decimal(self.charged_cents) / 100

    @property
    def difference(self) -> int | None:
        """RunTools' total tokens minus rtdash's; None when RunTools could not be asked."""
        return None if self.upstream is None else self.upstream.total - self.recorded.total

    @property
    def difference_percent(self) -> float | None:
        if self.difference is None:
            return None
        base = max(self.upstream.total, self.recorded.total, 1)
        return round(abs(self.difference) * 100 / base, 2)

    def as_dict(self) -> dict[str, Any]:
        return {
            "team": self.team.slug,
            "period": self.period,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "scope": self.scope,
            "scopeNote": self.scope_note,
            "runtools": self.upstream.as_dict() if self.upstream else None,
            "rtdash": self.recorded.as_dict(),
            "difference": self.difference,
            "differencePercent": self.difference_percent,
            "explained": {
                "outsideRtdash": {
                    "count": self.outside_count,
                    "totalTokens": self.outside_tokens,
                    "runs": [run.as_dict() for run in self.outside_runs],
                },
                "stillFollowed": {"count": self.following_count, "runs": self.following},
                "withoutUsage": {"count": self.no_usage_count, "runs": self.no_usage},
            },
            "credits": {
                "balanceCents": self.balance_cents,
                "chargedCents": self.charged_cents,
                "rtdashCost": str(self.recorded_cost),
                "unpricedRuns": self.unpriced_runs,
                "partialRuns": self.partial_runs,
                "runCharges": [charge.as_dict() for charge in self.run_charges],
            },
            "problems": [problem.as_dict() for problem in self.problems],
        }


def default_window(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The period as RunTools counts it: the calendar month (UTC) or the last N days."""
    if period == "current":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0), now
    return now - timedelta(days=int(period.removesuffix("d"))), now


def _when(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _number(value: object) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return 0


# --- Asking RunTools ----------------------------------------------------------------------------


@dataclass
class _Answer:
    data: Any = None
    status: int | None = None
    problem: Problem | None = None


def _plain_words(what: str, status: int, billing: bool) -> Problem:
    host = "RunTools' billing" if billing else "RunTools"
    if status == 401:
        return Problem(
            what,
            "unauthorized",
            f"{host} refused the team's key (401): it may be "
            "revoked or mistyped. Check it on the team settings page.",
        )
    if status == 403:
        return Problem(what, "forbidden", f"{host} does not let the team's key read this (403).")
    if status == 404:
        return Problem(
            what,
            "not_found",
            f"{host} has no such endpoint (404): check "
            f"{'RUNTOOLS_BILLING_URL' if billing else 'RUNTOOLS_API_URL'}.",
        )
    if status == 429:
        return Problem(
            what, "rate_limited", f"{host} asked rtdash to slow down (429); try again in a minute."
        )
    if status >= 500:
        return Problem(
            what,
            "unavailable",
            f"{host} is failing (HTTP {status}); its figures are missing until it answers again.",
        )
    return Problem(what, f"http_{status}", f"{host} answered HTTP {status}.")


async def _ask(what: str, call, *, billing: bool) -> _Answer:
    try:
        response = await call
    except upstream.UpstreamError as error:
        if error.code == "upstream_timeout":
            message = (
                f"{'RunTools billing' if billing else 'RunTools'} did not answer within "
                f"{settings.RTDASH_BILLING_TIMEOUT:g} s (RTDASH_BILLING_TIMEOUT)."
            )
        else:
            message = error.message + "."
        return _Answer(problem=Problem(what, error.code, message))
    if response.status_code != 200:
        return _Answer(
            status=response.status_code, problem=_plain_words(what, response.status_code, billing)
        )
    try:
        envelope = json.loads(response.content)
    except ValueError:
        return _Answer(
            problem=Problem(
                what, "invalid_response", "RunTools answered with something that is not JSON."
            )
        )
    data = envelope.get("data", envelope) if isinstance(envelope, dict) else envelope
    return _Answer(data=data, status=200)


async def _ask_everything(key: SealedKey, period: str) -> dict[str, _Answer]:
    """Every upstream call, at once. `all=true` first; a 403 there means the key is not an
    organisation admin's, and the key's own figures are asked instead."""
    usage, runs, credits, ledger = await asyncio.gather(
        _ask(
            "usage",
            upstream.call_billing(key, "/billing/my-usage", {"period": period, "all": "true"}),
            billing=True,
        ),
        _ask("runs", upstream.list_runs(key, limit=RUNS_PAGE, everyone=True), billing=False),
        _ask("credits", upstream.call_billing(key, "/billing/credits"), billing=True),
        _ask(
            "ledger",
            upstream.call_billing(key, "/billing/credits/history", {"limit": LEDGER_PAGE}),
            billing=True,
        ),
    )
    answers = {"usage": usage, "runs": runs, "credits": credits, "ledger": ledger, "scope": None}
    if usage.status == 403 or runs.status == 403:
        answers["scope"] = "user"
        own_usage, own_runs = await asyncio.gather(
            _ask(
                "usage",
                upstream.call_billing(key, "/billing/my-usage", {"period": period}),
                billing=True,
            ),
            _ask("runs", upstream.list_runs(key, limit=RUNS_PAGE), billing=False),
        )
        if usage.status == 403:
            answers["usage"] = own_usage
        if runs.status == 403:
            answers["runs"] = own_runs
    return answers


async def _outside_tokens(key: SealedKey, run_ids: list[str]) -> dict[str, int | None]:
    """The total tokens of a few outside runs, from their lookups (None where unknown)."""

    async def one(run_id: str) -> int | None:
        try:
            response = await upstream.look_up_run(key, run_id)
            data = json.loads(response.content).get("data") or {}
        except (upstream.UpstreamError, ValueError, AttributeError):
            return None
        usage = data.get("tokensUsed") or data.get("usage") if isinstance(data, dict) else None
        if not isinstance(usage, dict):
            return None
        total = usage.get("totalTokens")
        if total is None:
            total = _number(usage.get("inputTokens")) + _number(usage.get("outputTokens"))
        return _number(total)

    totals = await asyncio.gather(*(one(run_id) for run_id in run_ids))
    return dict(zip(run_ids, totals, strict=True))


# --- Putting it together --------------------------------------------------------------------------


def reconcile(team: Team, period: str, now: datetime | None = None) -> Reconciliation:
    """The reconciliation of `team` for `period` (one of PERIODS). Never raises for upstream
    failures: they become `problems`."""
    if period not in PERIODS:
        raise InvalidPeriod(f"period must be one of {', '.join(PERIODS)}.")
    now = now or timezone.now()
    since, until = default_window(period, now)
    result = Reconciliation(team=team, period=period, since=since, until=until)
    key = team.default_key()
    answers: dict[str, Any] = {}
    if key is None:
        result.problems.append(
            Problem(
                "key",
                "no_key",
                "The team has no RunTools key: add "
                "one on the team settings page to compare with RunTools.",
            )
        )
    else:
        sealed = SealedKey(key.ciphertext)
        try:
            answers = async_to_sync(_ask_everything)(sealed, period)
        except KeyDecryptionError:
            result.problems.append(
                Problem(
                    "key",
                    "key_undecryptable",
                    "The team's key cannot be decrypted with RTDASH_ENCRYPTION_KEYS.",
                )
            )
    _read_usage(result, answers.get("usage"), answers.get("scope"))
    _count_recorded(result)
    if key is not None and answers:
        _find_outside_runs(result, answers.get("runs"), SealedKey(key.ciphertext))
    _explain(result)
    _read_credits(result, answers.get("credits"), answers.get("ledger"))
    return result


def _read_usage(result: Reconciliation, answer: _Answer | None, scope: str | None) -> None:
    if answer is None:
        return
    if answer.problem is not None:
        result.problems.append(answer.problem)
        return
    data = answer.data if isinstance(answer.data, dict) else {}
    since, until = _when(data.get("since")), _when(data.get("until"))
    # Count rtdash's runs in the very window RunTools counted.
    result.since, result.until = since or result.since, until or result.until
    totals = data.get("totals") if isinstance(data.get("totals"), dict) else {}
    tokens = totals.get("tokens") if isinstance(totals.get("tokens"), dict) else {}
    result.upstream = Tokens(
        input=_number(tokens.get("input")),
        output=_number(tokens.get("output")),
        total=_number(tokens.get("total")),
        runs=_number(totals.get("runs")),
    )
    result.scope = str(data.get("scope") or scope or "")
    if scope == "user":
        result.scope = "user"
        result.scope_note = (
            "The team's key is not an organisation admin's key (all=true was refused): "
            "RunTools' figures are this key's own usage only, not every member's."
        )


def _window_runs(result: Reconciliation):
    return for_team(Run, result.team).filter(
        started_at__gte=result.since, started_at__lt=result.until
    )


def _count_recorded(result: Reconciliation) -> None:
    totals = _window_runs(result).aggregate(
        runs=Count("pk"),
        input=Sum("input_tokens"),
        output=Sum("output_tokens"),
        total=Sum("total_tokens"),
        # A run without totalTokens counts its input and output instead.
        missing_total_input=Sum("input_tokens", filter=Q(total_tokens__isnull=True)),
        missing_total_output=Sum("output_tokens", filter=Q(total_tokens__isnull=True)),
        cost=Sum("cost"),
        unpriced=Count("pk", filter=Q(cost_status="unpriced")),
        partial=Count("pk", filter=Q(cost_status="partial")),
    )
    result.recorded = Tokens(
        input=totals["input"] or 0,
        output=totals["output"] or 0,
        total=(totals["total"] or 0)
        + (totals["missing_total_input"] or 0)
        + (totals["missing_total_output"] or 0),
        runs=totals["runs"],
    )
    result.recorded_cost = totals["cost"] or Decimal(0)
    result.unpriced_runs, result.partial_runs = totals["unpriced"], totals["partial"]


def _find_outside_runs(result: Reconciliation, answer: _Answer | None, key: SealedKey) -> None:
    if answer is None:
        return
    if answer.problem is not None:
        result.problems.append(answer.problem)
        return
    listed = [
        item
        for item in (answer.data if isinstance(answer.data, list) else [])
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
    ]
    in_window = [
        item
        for item in listed
        if (when := _when(item.get("createdAt"))) is not None
        and result.since <= when < result.until
    ]
    ids = [item["id"] for item in in_window]
    known = set(
        for_team(Run, result.team)
        .filter(upstream_run_id__in=ids)
        .values_list("upstream_run_id", flat=True)
    )
    outside = [item for item in in_window if item["id"] not in known]
    result.outside_count = len(outside)
    looked_up = [item["id"] for item in outside[:OUTSIDE_LOOKUPS]]
    tokens = async_to_sync(_outside_tokens)(key, looked_up) if looked_up else {}
    result.outside_tokens = sum(total or 0 for total in tokens.values())
    result.outside_runs = [
        OutsideRun(
            id=item["id"],
            agent=str(item.get("agentId") or ""),
            user=str(item.get("userId") or ""),
            status=str(item.get("status") or ""),
            created_at=str(item.get("createdAt") or ""),
            total_tokens=tokens.get(item["id"]),
        )
        for item in outside[:LISTED]
    ]


def _run_rows(runs) -> list[dict]:
    return [
        {
            "run": run["pk"],
            "runId": run["upstream_run_id"],
            "agent": run["agent"],
            "status": run["status"],
            "startedAt": run["started_at"].isoformat(),
        }
        for run in runs.order_by("-started_at").values(
            "pk", "upstream_run_id", "agent", "status", "started_at"
        )[:LISTED]
    ]


def _explain(result: Reconciliation) -> None:
    runs = _window_runs(result)
    following = runs.filter(follow_next_at__isnull=False)
    no_usage = runs.filter(input_tokens__isnull=True, output_tokens__isnull=True)
    result.following_count, result.following = following.count(), _run_rows(following)
    result.no_usage_count, result.no_usage = no_usage.count(), _run_rows(no_usage)


def _read_credits(result: Reconciliation, credits: _Answer | None, ledger: _Answer | None) -> None:
    if credits is not None:
        if credits.problem is not None:
            result.problems.append(credits.problem)
        elif isinstance(credits.data, dict):
            result.balance_cents = _number(credits.data.get("balanceCents"))
    if ledger is None:
        return
    if ledger.problem is not None:
        result.problems.append(ledger.problem)
        return
    entries = [entry for entry in ledger.data or [] if isinstance(entry, dict)]
    charges: dict[str, int] = {}
    charged = 0
    for entry in entries:
        when = _when(entry.get("createdAt"))
        amount = _number(entry.get("amountCents"))
        if when is None or not (result.since <= when < result.until) or amount >= 0:
            continue
        charged -= amount
        reference = entry.get("referenceId")
        if isinstance(reference, str) and reference:
            charges[reference] = charges.get(reference, 0) - amount
    result.charged_cents = charged
    runs = for_team(Run, result.team).filter(upstream_run_id__in=list(charges))
    result.run_charges = [
        RunCharge(
            run_id=run.pk,
            upstream_run_id=run.upstream_run_id,
            agent=run.agent,
            charged_cents=charges[run.upstream_run_id],
            rtdash_cost=run.cost,
            cost_status=run.cost_status,
        )
        for run in runs.only("pk", "upstream_run_id", "agent", "cost", "cost_status").order_by(
            "-started_at"
        )[:LISTED]
    ]
