"""Write a large synthetic run history for benchmarks: `manage.py seed_history --runs N`.

Runs are made up, not run: no upstream is called and no frames are stored. Every row is marked
`synthetic=True` so it can never be mistaken for real usage. The history looks like a real
team's: four agents, gateway and playground sources, the team's members and tokens, threads of
several turns whose input grows turn by turn, failures with error codes, and usage, all spread
evenly over the last 90 days (ids grow with time, as they do for real runs). The daily rollup
is rebuilt at the end so reports agree with the runs.

Written with bulk_create in batches of `--batch` runs, each batch with its threads in one
transaction; a million runs take a few minutes on SQLite.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, models, transaction
from django.utils import timezone

from runs.models import (
    CostStatus,
    GatewayToken,
    Membership,
    Run,
    RunStatus,
    Source,
    Team,
    Thread,
)
from runs.pipeline.recording import THREAD_TITLE_LENGTH, rebuild_usage
from runs.pipeline.stats import rebuild_run_stats, rebuild_thread_usage

# agent: (weight, execution mode, system tokens)
AGENTS = {
    "code-assistant": (5, "in_sandbox", 420),
    "support-chat": (4, "managed", 180),
    "deep-thinker": (2, "managed", 260),
    "slow-poke": (1, "in_sandbox", 120),
}
SUBJECTS = {
    "code-assistant": [
        "Run the tests and summarize failures in {file}.",
        "Why does {file} fail on CI but not locally?",
        "Refactor {file} to stream rows instead of loading them all.",
        "Add type hints to {file} and fix what mypy finds.",
        "Find the flaky test in {file} and explain the race.",
    ],
    "support-chat": [
        "A customer cannot reset their password (ticket {ticket}). What should I tell them?",
        "Draft a friendly reply about the delayed shipment for order {ticket}.",
        "Summarize this week's top three support themes.",
        "The invoice for account {ticket} is wrong: explain the refund policy.",
    ],
    "deep-thinker": [
        "Should we shard the orders table now or next quarter?",
        "Compare three ways to price the new API tier.",
        "What are the risks of moving {file} to a queue?",
    ],
    "slow-poke": ["Walk me through the deploy checklist for {file} slowly."],
}
FOLLOW_UPS = [
    "Go on.",
    "Can you make it shorter?",
    "What would you do next?",
    "Thanks — and the edge cases?",
    "Show me the diff for {file}.",
]
FILES = [
    "tests/test_billing.py",
    "src/export.py",
    "app/models.py",
    "api/handlers.py",
    "worker/queue.py",
    "web/checkout.ts",
    "docs/deploy.md",
]
RESULTS = [
    "Done. {n} tests ran, {f} failed; the failures share one cause in {file}.",
    "Here is a short answer: the fix is a two-line change in {file}.",
    "I checked the account and drafted a reply that apologises and offers a refund.",
    "Three options, with trade-offs: do it now, do it next quarter, or never.",
    "The checklist has {n} steps; the risky one is the migration in {file}.",
]
# status: weight. Unfinished upstream statuses are rare, failures a few percent.
STATUSES = {
    RunStatus.COMPLETED: 860,
    RunStatus.FAILED: 70,
    RunStatus.INTERRUPTED: 30,
    RunStatus.CANCELLED: 20,
    RunStatus.REGISTERED: 10,
    RunStatus.DISPATCHED: 10,
}
REFUSALS = [
    (429, "rate_limited", "Too many requests; retry after 3 s."),
    (500, "internal_error", "RunTools had an internal error."),
    (502, "provider_error", "The model provider failed."),
]
STREAM_ERROR = ("provider_error", "The model provider failed mid-stream.")
CANCELLATION = ("cancelled", "Stopped before the run finished.")
INTERRUPTION = ("upstream_disconnected", "The RunTools stream ended before its final frame.")
DAYS = 90
CONTINUE_THREAD = 0.35  # chance a run continues one of the batch's open threads
MAX_TURNS = 12


@dataclass
class OpenThread:
    row: dict[str, Any]
    last_input: int
    turns: int = 0


def _adapter(field: models.Field) -> Callable[[Any], Any] | None:
    """How one column's Python value becomes a query parameter; None where it is already one."""
    ops = connection.ops
    if isinstance(field, models.DateTimeField):
        return ops.adapt_datetimefield_value
    if isinstance(field, models.DecimalField):
        return lambda value: ops.adapt_decimalfield_value(
            value, field.max_digits, field.decimal_places
        )
    if isinstance(field, models.JSONField):
        return lambda value: field.get_db_prep_save(value, connection)
    return None


def insert_rows(model: type[models.Model], rows: list[dict[str, Any]]) -> None:
    """INSERT many rows with one prepared statement (executemany).

    bulk_create compiles a fresh statement for every few dozen rows (SQLite allows 999
    parameters, and a Run has 48 columns), which is most of the time at a million rows;
    executemany prepares once. Values are adapted per column type as the ORM would.
    """
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    defaults = {f.attname: f.get_default() for f in fields}
    adapters = [(f.attname, _adapter(f)) for f in fields]
    params = []
    for row in rows:
        values = []
        for attname, adapt in adapters:
            value = row.get(attname, defaults[attname])
            values.append(adapt(value) if adapt is not None and value is not None else value)
        params.append(values)
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    # Only the model's own table and column names go into the text; values are parameters.
    table = quote(model._meta.db_table)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


class Command(BaseCommand):
    help = "Write N synthetic runs (marked synthetic) with threads and usage, for benchmarks."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--runs", type=int, required=True, help="How many runs to write.")
        parser.add_argument(
            "--team", default="bench", help="Team slug; created when missing. Default: bench."
        )
        parser.add_argument("--batch", type=int, default=5000, help="Runs per transaction.")
        parser.add_argument("--seed", type=int, default=1, help="Random seed (repeatable data).")
        parser.add_argument("--days", type=int, default=DAYS, help="Spread over this many days.")

    def handle(self, *args, runs: int, team: str, batch: int, seed: int, days: int, **options):
        if runs < 1:
            raise CommandError("--runs must be at least 1")
        if batch < 1 or days < 1:
            raise CommandError("--batch and --days must be at least 1")
        team_row, created = Team.objects.get_or_create(slug=team, defaults={"name": team})
        if created:
            self.stdout.write(f"Created team {team}.")
        started = time.perf_counter()
        writer = HistoryWriter(team_row, random.Random(seed), days=days)
        written = 0
        while written < runs:
            count = min(batch, runs - written)
            writer.write_batch(written, count, runs)
            written += count
            if written % (batch * 20) == 0 or written == runs:
                elapsed = time.perf_counter() - started
                self.stdout.write(f"{written} runs written ({written / elapsed:,.0f}/s)")
        rollup_started = time.perf_counter()
        rebuild_usage(team_row)
        # The reports' statistics and per-thread totals, so a first report read has no work.
        rebuild_run_stats(team_row)
        rebuild_thread_usage(team_row)
        self.stdout.write(
            f"Wrote {runs} synthetic runs and {writer.threads_written} threads for team "
            f"{team_row.slug} in {time.perf_counter() - started:.1f} s "
            f"(rollup rebuilt in {time.perf_counter() - rollup_started:.1f} s)."
        )


class HistoryWriter:
    def __init__(self, team: Team, rng: random.Random, *, days: int) -> None:
        self.team = team
        self.rng = rng
        self.now = timezone.now()
        self.start = self.now - timedelta(days=days)
        self.span = (self.now - self.start).total_seconds()
        # Unique per invocation, so seeding twice never collides on a thread id.
        self.tag = secrets.token_hex(3)
        self.threads_written = 0
        self.users = [
            m.user_id for m in Membership.objects.filter(team=team).exclude(role="viewer")
        ]
        self.tokens = list(
            GatewayToken.objects.filter(team=team, revoked_at__isnull=True).values_list(
                "pk", flat=True
            )
        )
        if not self.tokens:
            # Gateway runs need a "who"; the plaintext is dropped, so nobody can use these.
            self.tokens = [GatewayToken.issue(team, f"synthetic-{n}")[0].pk for n in range(1, 4)]
        self.agents = list(AGENTS)
        self.agent_weights = [AGENTS[a][0] for a in self.agents]
        self.statuses = list(STATUSES)
        self.status_weights = list(STATUSES.values())

    def _moment(self, index: int, total: int) -> datetime:
        # Evenly spread with jitter, increasing with index so ids follow time.
        offset = (index + self.rng.random() * 0.9) * self.span / total
        return self.start + timedelta(seconds=offset)

    def _text(self, template: str) -> str:
        rng = self.rng
        return template.format(
            file=rng.choice(FILES),
            ticket=f"#{rng.randint(10000, 99999)}",
            n=rng.randint(20, 900),
            f=rng.randint(0, 9),
        )

    def write_batch(self, first_index: int, count: int, total: int) -> None:
        rng = self.rng
        open_threads: dict[str, list[OpenThread]] = {agent: [] for agent in self.agents}
        new_threads: list[OpenThread] = []
        runs: list[tuple[dict[str, Any], OpenThread | None]] = []
        for index in range(first_index, first_index + count):
            agent = rng.choices(self.agents, self.agent_weights)[0]
            _weight, mode, system_tokens = AGENTS[agent]
            status = rng.choices(self.statuses, self.status_weights)[0]
            started_at = self._moment(index, total)
            source = Source.GATEWAY if rng.random() < 0.55 or not self.users else Source.PLAYGROUND
            thread = None
            candidates = open_threads[agent]
            if candidates and rng.random() < CONTINUE_THREAD:
                thread = rng.choice(candidates)
                prompt = self._text(rng.choice(FOLLOW_UPS))
            else:
                prompt = self._text(rng.choice(SUBJECTS[agent]))
            run: dict[str, Any] = {
                "team_id": self.team.pk,
                "source": source,
                "token_id": rng.choice(self.tokens) if source == Source.GATEWAY else None,
                "user_id": rng.choice(self.users) if source == Source.PLAYGROUND else None,
                "agent": agent,
                "prompt": prompt,
                "config": {"maxTurns": rng.choice([4, 8, 12]), "maxTokens": 4096},
                "metadata": {"env": rng.choice(["prod", "prod", "staging"]), "synthetic": True},
                "stream": rng.random() < 0.7,
                "status": status,
                "cost": None,
                "cost_status": CostStatus.UNPRICED,
                "started_at": started_at,
                "execution_mode": mode,
                "synthetic": True,
            }
            if status == RunStatus.FAILED and rng.random() < 0.8:
                thread = None  # refused before the stream opened: RunTools made no thread
            else:
                # Every run that reached RunTools is in a thread, new or continued.
                if thread is None:
                    title = prompt.strip().splitlines()[0][:THREAD_TITLE_LENGTH]
                    row = {
                        "team_id": self.team.pk,
                        "upstream_id": f"thr_syn{self.tag}_{index:08x}",
                        "agent": agent,
                        "title": title,
                        "turns": 0,
                        "input_tokens": 0,
                        "output_tokens": 0,
                        "created_at": started_at,
                        "last_activity_at": started_at,
                    }
                    thread = OpenThread(row, last_input=system_tokens)
                    new_threads.append(thread)
                    candidates.append(thread)
                run["upstream_thread_id"] = thread.row["upstream_id"]
                run["upstream_run_id"] = f"run_syn{self.tag}_{index:08x}"
                if mode == "in_sandbox":
                    run["sandbox_id"] = f"sandbox-{thread.row['upstream_id'][-6:]}"
            self._finish(run, status, thread, system_tokens)
            runs.append((run, thread))
            if thread is not None and thread.turns >= MAX_TURNS:
                candidates.remove(thread)
        with transaction.atomic():
            insert_rows(Thread, [t.row for t in new_threads])
            pks: dict[str, int] = {}
            if new_threads:
                # The batch's thread ids share a prefix and a fixed-width counter, so one range
                # query finds the primary keys just given to them.
                first, last = new_threads[0].row["upstream_id"], new_threads[-1].row["upstream_id"]
                pks = dict(
                    Thread.objects.filter(
                        team=self.team, upstream_id__gte=first, upstream_id__lte=last
                    ).values_list("upstream_id", "pk")
                )
            for run, thread in runs:
                if thread is not None:
                    run["thread_id"] = pks[thread.row["upstream_id"]]
            insert_rows(Run, [run for run, _ in runs])
        self.threads_written += len(new_threads)

    def _finish(self, run: dict, status: str, thread: OpenThread | None, system: int) -> None:
        rng = self.rng
        first_byte_ms = rng.randint(80, 900)
        duration_ms = first_byte_ms + rng.randint(200, 40_000)
        finished_at = run["started_at"] + timedelta(milliseconds=duration_ms)
        run.update(
            first_byte_ms=first_byte_ms,
            duration_ms=duration_ms,
            first_byte_at=run["started_at"] + timedelta(milliseconds=first_byte_ms),
            finished_at=finished_at,
            upstream_ms=duration_ms - rng.randint(1, 5),
            overhead_ms=round(rng.uniform(0.4, 3.5), 2),
            http_status=200,
        )
        if thread is not None:
            thread.turns += 1
            thread.row["turns"] = thread.turns
            thread.row["last_activity_at"] = finished_at
        if status in (RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.CANCELLED):
            if status == RunStatus.CANCELLED:
                run["error_code"], run["error_message"] = CANCELLATION
            elif status == RunStatus.INTERRUPTED:
                run["error_code"], run["error_message"] = INTERRUPTION
            elif thread is None:
                # Refused before the stream opened: an HTTP error, no thread.
                run["http_status"], run["error_code"], run["error_message"] = rng.choice(REFUSALS)
            else:
                run["error_code"], run["error_message"] = STREAM_ERROR
            return
        # The conversation so far is sent again on every turn: input climbs along a thread.
        previous = thread.last_input if thread is not None else system
        input_tokens = previous + rng.randint(30, 400)
        output_tokens = rng.randint(20, 1200)
        usage = {"inputTokens": input_tokens, "outputTokens": output_tokens}
        if run["agent"] == "deep-thinker":
            run["reasoning_tokens"] = usage["reasoningTokens"] = rng.randint(100, 3000)
        if thread is not None and thread.turns > 1:
            run["cached_input_tokens"] = usage["cachedInputTokens"] = previous // 2
        usage["totalTokens"] = input_tokens + output_tokens
        run.update(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=usage["totalTokens"],
            usage=usage,
            iterations=rng.randint(1, 8),
        )
        if status == RunStatus.COMPLETED:
            run["result"] = self._text(rng.choice(RESULTS))
        if thread is not None:
            thread.last_input = input_tokens + output_tokens
            thread.row["input_tokens"] += input_tokens
            thread.row["output_tokens"] += output_tokens
