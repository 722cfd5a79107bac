"""Prometheus metrics: what the whole deployment did, and how this process is doing.

Two kinds, because workers sit behind a load balancer and a scrape reaches one of them:

- business counters (`rtdash_runs_total`, `rtdash_run_tokens_total`, `rtdash_run_cost_usd_total`)
  are the deployment's, read from the daily rollups every run's finish already writes, and
  cached for RTDASH_METRICS_CACHE_SECONDS, so every worker answers the same numbers;
- latency histograms, the in-flight gauge, upstream errors and relayed frames are this
  process's (Prometheus sums them over the workers it scrapes one by one), plus the standard
  process metrics of prometheus-client.

`observe_finished_run` is the one hook on a run's path: called by the finish step with what it
already holds, it never queries the database.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import prometheus_client
from django.conf import settings
from django.db.models import Count, Sum
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from runs.models import DailyUsage, Run, RunStatus

# The `_created` series would double every counter for nothing rtdash's dashboards use.
prometheus_client.disable_created_metrics()

OTHER = "other"
# Per-process label caps: agent names and error codes come from callers and the upstream, so
# past these many distinct values the rest share the label "other".
MAX_PROCESS_AGENTS = 50
MAX_ERROR_CODES = 30
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Codes rtdash sets itself when it ends a run: not the upstream's errors.
RTDASH_CODES = frozenset({"cancelled", "reader_stopped", "reader_error", "reader_lost"})

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, float("inf"))
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, float("inf"))

RUN_DURATION = Histogram(
    "rtdash_run_duration_seconds",
    "Runs finished by this process: start to finish.",
    ["agent", "source"],
    buckets=LATENCY_BUCKETS,
)
RUN_FIRST_TOKEN = Histogram(
    "rtdash_run_first_token_seconds",
    "Runs finished by this process: start to the first byte of the upstream's answer.",
    ["agent", "source"],
    buckets=LATENCY_BUCKETS,
)
GATEWAY_OVERHEAD = Histogram(
    "rtdash_gateway_overhead_seconds",
    "Gateway runs: rtdash's own time, from the request's receipt to its send upstream.",
    buckets=OVERHEAD_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "rtdash_upstream_errors", "Runs this process ended with an upstream error, by code.", ["code"]
)
RELAY_FRAMES = Counter(
    "rtdash_relay_frames", "Frames this process relayed to playground sockets and other workers."
)


class _BoundedLabels:
    """The first `limit` distinct values keep their name; the rest become "other"."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if not LABEL_PATTERN.match(value):
            return OTHER
        with self.lock:
            if len(self.seen) >= self.limit:
                return OTHER
            self.seen.add(value)
        return value


process_agent = _BoundedLabels(MAX_PROCESS_AGENTS)
error_code = _BoundedLabels(MAX_ERROR_CODES)


def observe_finished_run(run: Run) -> None:
    """Record a run this process just finished (called once per run by `finish_run`)."""
    agent, source = process_agent(run.agent), run.source
    if run.duration_ms is not None:
        RUN_DURATION.labels(agent, source).observe(run.duration_ms / 1000)
    if run.first_byte_ms is not None:
        RUN_FIRST_TOKEN.labels(agent, source).observe(run.first_byte_ms / 1000)
    if run.overhead_ms is not None and source == "gateway":
        GATEWAY_OVERHEAD.observe(run.overhead_ms / 1000)
    failed = run.status in (RunStatus.FAILED, RunStatus.INTERRUPTED)
    if failed and run.error_code and run.error_code not in RTDASH_CODES:
        UPSTREAM_ERRORS.labels(error_code(run.error_code)).inc()


def count_relayed_frames(count: int) -> None:
    RELAY_FRAMES.inc(count)


# --- the deployment's counters, from the rollups ---------------------------------------------

TOKEN_KINDS = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cached_input": "cached_input_tokens",
    "reasoning": "reasoning_tokens",
}


@dataclass
class Totals:
    """Counter values keyed by their labels."""

    runs: dict[tuple[str, str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    tokens: dict[tuple[str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    cost: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))


def deployment_totals(max_agents: int) -> Totals:
    """Every team's runs, tokens and cost since the start, from one grouped rollup query.

    A team's `max_agents` busiest agents keep their name; the others are summed as "other".
    """
    rows = list(
        DailyUsage.objects.values("team__slug", "agent", "source")
        .annotate(
            runs_sum=Sum("runs"),
            completed_sum=Sum("completed"),
            failed_sum=Sum("failed"),
            cost_sum=Sum("cost"),
            **{f"{kind}_sum": Sum(column) for kind, column in TOKEN_KINDS.items()},
            groups=Count("pk"),
        )
        .order_by()
    )
    agent_runs: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        agent_runs[row["team__slug"]][row["agent"]] += row["runs_sum"] or 0
    named = {
        team: {
            agent
            for agent, _ in sorted(agents.items(), key=lambda kv: (-kv[1], kv[0]))[:max_agents]
        }
        for team, agents in agent_runs.items()
    }
    totals = Totals()
    for row in rows:
        team = row["team__slug"]
        agent = row["agent"] if row["agent"] in named[team] else OTHER
        runs, completed, failed = (
            row["runs_sum"] or 0,
            row["completed_sum"] or 0,
            row["failed_sum"] or 0,
        )
        for status, value in (
            ("completed", completed),
            ("failed", failed),
            (OTHER, runs - completed - failed),
        ):
            totals.runs[(team, agent, row["source"], status)] += value
        for kind in TOKEN_KINDS:
            totals.tokens[(team, agent, kind)] += row[f"{kind}_sum"] or 0
        totals.cost[(team, agent)] += float(row["cost_sum"] or 0)
    return totals


def in_flight_by_source() -> dict[str, int]:
    """Runs this process is reading now (the partial index on running runs serves it)."""
    from runs.pipeline.recording import READER_ID

    rows = (
        Run.objects.filter(status=RunStatus.RUNNING, reader=READER_ID)
        .values("source")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {row["source"]: row["n"] for row in rows}


class RtdashCollector(Collector):
    """The rollup counters (cached briefly) and the in-flight gauge, read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: Totals | None = None
        self._read_at = 0.0

    def totals(self) -> Totals:
        with self._lock:
            age = time.monotonic() - self._read_at
            if self._totals is None or age >= settings.RTDASH_METRICS_CACHE_SECONDS:
                self._totals = deployment_totals(settings.RTDASH_METRICS_MAX_AGENTS)
                self._read_at = time.monotonic()
            return self._totals

    def forget(self) -> None:
        with self._lock:
            self._totals = None

    def describe(self) -> list:
        # Without it, registering would call collect(), a database query at import time.
        return []

    def collect(self) -> Iterator:
        totals = self.totals()
        yield _counter(
            "rtdash_runs",
            "Finished runs, the whole deployment's.",
            ["team", "agent", "source", "status"],
            totals.runs.items(),
        )
        yield _counter(
            "rtdash_run_tokens",
            "Tokens of finished runs, the whole deployment's.",
            ["team", "agent", "kind"],
            totals.tokens.items(),
        )
        yield _counter(
            "rtdash_run_cost_usd",
            "Cost of finished runs in dollars, the whole deployment's.",
            ["team", "agent"],
            totals.cost.items(),
        )
        gauge = GaugeMetricFamily(
            "rtdash_runs_in_flight", "Runs this process is working on.", labels=["source"]
        )
        in_flight = in_flight_by_source()
        for source in (
            "gateway",
            "playground",
            *sorted(set(in_flight) - {"gateway", "playground"}),
        ):
            gauge.add_metric([source], in_flight.get(source, 0))
        yield gauge


def _counter(
    name: str, documentation: str, labels: list[str], values: Iterable
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for label_values, value in sorted(values):
        family.add_metric(list(label_values), value)
    return family


COLLECTOR = RtdashCollector()
REGISTRY.register(COLLECTOR)


def exposition() -> tuple[bytes, str]:
    """The metrics page and its content type."""
    return prometheus_client.generate_latest(REGISTRY), prometheus_client.CONTENT_TYPE_LATEST
