"""The organisation's records: every run made through the simulator, its activity log and its
credit ledger.

Threads are per key (store.py); these are per organisation, because that is what the runs list
with `all=true`, the activity log and billing show. A run's record outlives its stream, so a run
that answered `registered` or `dispatched` can be followed to its end with `GET /v1/run/{id}`.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .accounts import ORG_ID
from .agents import Agent
from .web import utc_now

RUN_STATUSES = ("running", "completed", "failed", "cancelled")

# The simulator's own platform prices in cents per million tokens (input, output); reasoning
# tokens are billed as output. No public price table exists, so these are made up, but fixed,
# so that every ledger entry can be recomputed from its run's usage.
PRICES_CENTS_PER_MTOK: dict[str, tuple[int, int]] = {
    "claude-sonnet-4-5": (300, 1500),
    "claude-opus-4-1": (1500, 7500),
    "claude-haiku-4-5": (100, 500),
    "gpt-5-mini": (25, 200),
}
FREE_CREDITS_CENTS = 500
TOPUP_CENTS = 10_000
# Sandbox time a run of an in-sandbox agent is reported to use, per iteration (not charged).
SANDBOX_SECONDS_PER_ITERATION = 2


def run_cost_cents(model: str, usage: dict[str, int]) -> int:
    """What one completed run is charged: its tokens at the model's price, at least a cent."""
    input_price, output_price = PRICES_CENTS_PER_MTOK[model]
    output = usage.get("outputTokens", 0) + usage.get("reasoningTokens", 0)
    micro = usage.get("inputTokens", 0) * input_price + output * output_price
    return max(1, math.ceil(micro / 1_000_000))


def _output_json(text: str) -> Any:
    """A structured answer, when the answer is a JSON object or list; else None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict | list) else None


@dataclass
class RunRecord:
    id: str
    key: str
    user_id: str
    agent: Agent
    thread_id: str
    sandbox_id: str | None
    created_at: str
    output: str
    usage: dict[str, int]
    iterations: int
    tools: tuple[str, ...]
    status: str = "running"
    completed_at: str | None = None
    # Registered or dispatched runs only: how many more lookups answer `running` before the
    # run completes. None for every other run, which ends with its request or stream.
    pending_lookups: int | None = None
    cost_cents: int = 0
    order: int = 0  # org-wide creation counter: newest-first without clock ties

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sandboxId": self.sandbox_id,
            "agentId": self.agent.id,
            "userId": self.user_id,
            "status": self.status,
            "createdAt": self.created_at,
        }

    def detail(self) -> dict[str, Any]:
        done = self.status == "completed"
        usage = dict(self.usage) if done else None
        return {
            **self.summary(),
            "output": self.output if done else None,
            "outputJson": _output_json(self.output) if done else None,
            # [I] The contract names tokensUsed but not its form: the run's usage object, with
            # the same keys as POST /v1/run's usage, and the same object again as `usage`.
            "tokensUsed": usage,
            "usage": usage,
            "completedAt": self.completed_at,
        }


@dataclass
class ActivityEvent:
    sequence: int
    actor_user_id: str
    resource_type: str
    resource_id: str
    event_type: str
    severity: str
    status: str
    title: str
    summary: str
    attributes: dict[str, Any]
    thread_id: str | None
    run_id: str | None
    sandbox_id: str | None
    tool_slug: str | None
    created_at: str = field(default_factory=utc_now)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": f"act_{self.sequence:08d}",
            "orgId": ORG_ID,
            "actorUserId": self.actor_user_id,
            "actorType": "api_key",
            "resourceType": self.resource_type,
            "resourceId": self.resource_id,
            "eventType": self.event_type,
            "severity": self.severity,
            "status": self.status,
            "title": self.title,
            "summary": self.summary,
            "attributes": self.attributes,
            "threadId": self.thread_id,
            "agentRunId": self.run_id,
            "sandboxId": self.sandbox_id,
            "toolSlug": self.tool_slug,
            "createdAt": self.created_at,
        }


@dataclass
class LedgerEntry:
    sequence: int
    type: str
    amount_cents: int  # positive for credit added, negative for credit used
    resource: str | None
    description: str
    reference_id: str | None
    balance_after_cents: int
    created_at: str = field(default_factory=utc_now)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": f"led_{self.sequence:08d}",
            "orgId": ORG_ID,
            "type": self.type,
            "amountCents": self.amount_cents,
            "resource": self.resource,
            "description": self.description,
            "referenceId": self.reference_id,
            "balanceAfterCents": self.balance_after_cents,
            "createdAt": self.created_at,
        }


SEVERITY = {"started": "info", "completed": "info", "failed": "error", "cancelled": "warning"}
# Only the newest records are kept, so a benchmark of a million runs cannot grow the simulator
# without bound. Past these, the oldest go (10% at a time, so trimming stays rare): lookups of
# them are 404s, and usage sums no longer cover them. Credit totals are counters and stay exact.
MAX_RUNS = 50_000
MAX_ACTIVITY = 200_000
MAX_LEDGER = 50_000


def _trim(items: list[Any], limit: int) -> None:
    if len(items) > limit * 1.1:
        del items[: len(items) - limit]


class OrgRecords:
    def __init__(self) -> None:
        self.runs: dict[str, RunRecord] = {}
        self.activity: list[ActivityEvent] = []
        self.ledger: list[LedgerEntry] = []
        self.total_granted_cents = 0
        self.total_used_cents = 0
        self._run_clock = itertools.count(1)
        self.credit("free_credits", FREE_CREDITS_CENTS, "Free credits on sign-up")
        self.credit("topup", TOPUP_CENTS, "Top-up")

    # --- credits -------------------------------------------------------------------------------

    @property
    def balance_cents(self) -> int:
        return self.ledger[-1].balance_after_cents if self.ledger else 0

    def credit(
        self,
        type_: str,
        amount_cents: int,
        description: str,
        *,
        resource: str | None = None,
        reference_id: str | None = None,
    ) -> LedgerEntry:
        entry = LedgerEntry(
            sequence=self.ledger[-1].sequence + 1 if self.ledger else 1,
            type=type_,
            amount_cents=amount_cents,
            resource=resource,
            description=description,
            reference_id=reference_id,
            balance_after_cents=self.balance_cents + amount_cents,
        )
        self.ledger.append(entry)
        if amount_cents > 0:
            self.total_granted_cents += amount_cents
        else:
            self.total_used_cents -= amount_cents
        _trim(self.ledger, MAX_LEDGER)
        return entry

    # --- runs ----------------------------------------------------------------------------------

    def start_run(self, record: RunRecord) -> None:
        record.order = next(self._run_clock)
        self.runs[record.id] = record
        if len(self.runs) > MAX_RUNS * 1.1:
            # Dicts keep insertion order: the first keys are the oldest runs.
            for old in list(self.runs)[: len(self.runs) - MAX_RUNS]:
                del self.runs[old]
        self._log_run(record, "started")

    def finish_run(self, record: RunRecord, status: str) -> None:
        """End a running run once: its activity, and for a completed run its charge."""
        if record.status != "running":
            return
        record.status = status
        record.completed_at = utc_now()
        record.pending_lookups = None
        if status == "completed":
            for index, tool in enumerate(record.tools, start=1):
                self._log_tool(record, index, tool)
            record.cost_cents = run_cost_cents(record.agent.model, record.usage)
            self.credit(
                "usage",
                -record.cost_cents,
                f"{record.agent.name} run",
                resource="agent_run",
                reference_id=record.id,
            )
        self._log_run(record, status)

    def look_up(self, run_id: str) -> RunRecord | None:
        """A run by id. Each lookup of a registered or dispatched run brings it nearer its end."""
        record = self.runs.get(run_id)
        if record is not None and record.pending_lookups is not None:
            if record.pending_lookups > 0:
                record.pending_lookups -= 1
            else:
                self.finish_run(record, "completed")
        return record

    def resume_clock(self) -> None:
        """After loading runs from a store file, continue their creation counter."""
        self._run_clock = itertools.count(max((r.order for r in self.runs.values()), default=0) + 1)

    def newest_runs(self) -> list[RunRecord]:
        return sorted(self.runs.values(), key=lambda r: r.order, reverse=True)

    # --- activity ------------------------------------------------------------------------------

    def _log(self, **fields: Any) -> None:
        sequence = self.activity[-1].sequence + 1 if self.activity else 1
        self.activity.append(ActivityEvent(sequence=sequence, **fields))
        _trim(self.activity, MAX_ACTIVITY)

    def _log_run(self, record: RunRecord, phase: str) -> None:
        attributes: dict[str, Any] = {
            "agentSlug": record.agent.slug,
            "executionMode": record.agent.execution_mode,
        }
        summary = f"{record.agent.slug} run {phase}"
        if phase == "completed":
            attributes |= {
                "iterations": record.iterations,
                "usage": dict(record.usage),
                "costCents": record.cost_cents,
            }
            summary += f" after {record.iterations} iteration(s)"
        self._log(
            actor_user_id=record.user_id,
            resource_type="agent_run",
            resource_id=record.id,
            event_type=f"agent.run.{phase}",
            severity=SEVERITY[phase],
            status="running" if phase == "started" else phase,
            title=f"Run {phase}: {record.agent.name}",
            summary=summary,
            attributes=attributes,
            thread_id=record.thread_id,
            run_id=record.id,
            sandbox_id=record.sandbox_id,
            tool_slug=None,
        )

    def _log_tool(self, record: RunRecord, index: int, tool: str) -> None:
        self._log(
            actor_user_id=record.user_id,
            resource_type="tool_call",
            resource_id=f"{record.id}:{index}",
            event_type="tool.call.completed",
            severity="info",
            status="completed",
            title=f"Tool completed: {tool}",
            summary=f"{tool} ran for {record.agent.slug}",
            attributes={"agentSlug": record.agent.slug},
            thread_id=record.thread_id,
            run_id=record.id,
            sandbox_id=record.sandbox_id,
            tool_slug=tool,
        )
