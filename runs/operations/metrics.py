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
from datetime import date, timedelta

import prometheus_client
from django.conf import settings
from django.db.models import Count, Sum
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
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


# The histograms' children for each (agent, source), so a run's hook skips the label lookups.
_children: dict[tuple[str, str], tuple] = {}


def _histograms_for(agent: str, source: str) -> tuple:
    key = (agent, source)
    children = _children.get(key)
    if children is None:
        label = process_agent(agent)
        children = (RUN_DURATION.labels(label, source), RUN_FIRST_TOKEN.labels(label, source))
        if label != OTHER:
            _children[key] = children
    return children


def observe_finished_run(run: Run) -> None:
    """Record a run this process just finished (called once per run by `finish_run`)."""
    duration, first_token = _histograms_for(run.agent, run.source)
    if run.duration_ms is not None:
        duration.observe(run.duration_ms / 1000)
    if run.first_byte_ms is not None:
        first_token.observe(run.first_byte_ms / 1000)
    if run.overhead_ms is not None and run.source == "gateway":
        GATEWAY_OVERHEAD.observe(run.overhead_ms / 1000)
    code = run.error_code
    failed = run.status in (RunStatus.FAILED, RunStatus.INTERRUPTED)
    if code and failed and code not in RTDASH_CODES:
        UPSTREAM_ERRORS.labels(error_code(code)).inc()


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


Group = tuple[str, str, str]  # (team slug, agent, source)
GroupSums = dict[Group, dict[str, float]]
SUMMED = ("runs", "completed", "failed", "cost", *TOKEN_KINDS.values())


def rollup_sums(rows) -> GroupSums:
    """The rollup rows' sums per (team, agent, source), in one grouped query."""
    grouped = (
        rows.values("team__slug", "agent", "source")
        .annotate(**{f"sum_{column}": Sum(column) for column in SUMMED})
        .order_by()
    )
    return {
        (row["team__slug"], row["agent"], row["source"]): {
            column: float(row[f"sum_{column}"] or 0) for column in SUMMED
        }
        for row in grouped
    }


def add_sums(*parts: GroupSums) -> GroupSums:
    combined: GroupSums = defaultdict(lambda: dict.fromkeys(SUMMED, 0.0))
    for part in parts:
        for group, sums in part.items():
            into = combined[group]
            for column, amount in sums.items():
                into[column] += amount
    return combined


def totals_from(sums: GroupSums, max_agents: int) -> Totals:
    """Counter values from the sums; a team's `max_agents` busiest agents keep their name,
    the others are summed as "other"."""
    agent_runs: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (team, agent, _source), group in sums.items():
        agent_runs[team][agent] += group["runs"]
    named = {
        team: {
            name for name, _ in sorted(agents.items(), key=lambda kv: (-kv[1], kv[0]))[:max_agents]
        }
        for team, agents in agent_runs.items()
    }
    totals = Totals()
    for (team, agent, source), group in sums.items():
        agent = agent if agent in named[team] else OTHER
        runs, completed, failed = group["runs"], group["completed"], group["failed"]
        for status, count in (
            ("completed", completed),
            ("failed", failed),
            (OTHER, runs - completed - failed),
        ):
            totals.runs[(team, agent, source, status)] += count
        for kind, column in TOKEN_KINDS.items():
            totals.tokens[(team, agent, kind)] += group[column]
        totals.cost[(team, agent)] += group["cost"]
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


# Days before yesterday rarely change (a rebuild, a run that started then and finished late),
# so their sums are reread this many times less often than the recent days'.
HISTORY_REFRESH_FACTOR = 60


class DeploymentCounters:
    """The rollup counters, rendered once per RTDASH_METRICS_CACHE_SECONDS.

    Kept out of prometheus-client's registry: with hundreds of series, rendering them was most
    of a scrape, and here a cached scrape reuses the text. The sums of days before yesterday
    are kept HISTORY_REFRESH_FACTOR times longer; only the recent days are reread each time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._text = b""
        self._read_at = 0.0
        self._history: GroupSums = {}
        self._history_before: date | None = None
        self._history_at = 0.0

    def forget(self) -> None:
        with self._lock:
            self._read_at, self._history_before = 0.0, None

    def _sums(self, now: float, keep: float) -> GroupSums:
        cutoff = timezone.now().date() - timedelta(days=1)
        stale = now - self._history_at >= keep * HISTORY_REFRESH_FACTOR
        if self._history_before != cutoff or stale:
            self._history = rollup_sums(DailyUsage.objects.filter(day__lt=cutoff))
            self._history_before, self._history_at = cutoff, now
        return add_sums(self._history, rollup_sums(DailyUsage.objects.filter(day__gte=cutoff)))

    def text(self) -> bytes:
        keep = settings.RTDASH_METRICS_CACHE_SECONDS
        with self._lock:
            now = time.monotonic()
            if not self._text or now - self._read_at >= keep:
                totals = totals_from(self._sums(now, keep), settings.RTDASH_METRICS_MAX_AGENTS)
                registry = CollectorRegistry(auto_describe=False)
                registry.register(_Families(totals))
                self._text = prometheus_client.generate_latest(registry)
                self._read_at = now
            return self._text


class _Families(Collector):
    def __init__(self, totals: Totals) -> None:
        self.totals = totals

    def collect(self) -> Iterator:
        totals = self.totals
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


class InFlight(Collector):
    """This process's runs in flight, read at scrape time."""

    def describe(self) -> list:
        # Without it, registering would call collect(), a database query at import time.
        return []

    def collect(self) -> Iterator:
        gauge = GaugeMetricFamily(
            "rtdash_runs_in_flight", "Runs this process is working on.", labels=["source"]
        )
        in_flight = in_flight_by_source()
        for source in sorted({"gateway", "playground", *in_flight}):
            gauge.add_metric([source], in_flight.get(source, 0))
        yield gauge


def _counter(
    name: str, documentation: str, labels: list[str], values: Iterable
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for label_values, value in sorted(values):
        family.add_metric(list(label_values), value)
    return family


DEPLOYMENT = DeploymentCounters()
REGISTRY.register(InFlight())


def exposition() -> tuple[bytes, str]:
    """The metrics page and its content type: the deployment's counters, then this process's."""
    body = DEPLOYMENT.text() + prometheus_client.generate_latest(REGISTRY)
    return body, prometheus_client.CONTENT_TYPE_LATEST
