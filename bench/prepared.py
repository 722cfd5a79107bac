"""What the prepared statements of runs.core.sql save, in-process, against the ORM.

Each hot-path statement is timed (best of 5 repeats of N calls, timeit) as rtdash runs it and
as the plain ORM would, in this process's CPU time: what the worker spends. The database's own
time is left out, as it does not depend on who built the statement. It runs on the database
DATABASE_URL names (SQLite by default) and writes to it: point it at a scratch one.

    .venv/bin/python -m bench.prepared
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/scratch .venv/bin/python -m bench.prepared
"""

from __future__ import annotations

import os
import sys
import time
import timeit

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtdash.settings")
N = 300


def _best_us(statement) -> float:
    return min(timeit.repeat(statement, timer=time.process_time, number=N, repeat=5)) / N * 1e6


def main() -> None:
    django.setup()
    from django.core.management import call_command
    from django.db import transaction
    from django.db.models import Exists, OuterRef, Subquery

    from runs.core import sql as fastsql
    from runs.core.validation import validate_run
    from runs.models import (
        Budget,
        DailyRunStats,
        DailyUsage,
        GatewayToken,
        Price,
        Run,
        RunToolsKey,
        Team,
        hash_token,
    )
    from runs.models.usage import DailyMetaUsage
    from runs.pipeline.pricing import price_in_force
    from runs.pipeline.recording import (
        FINISH_READS,
        FINISH_WRITES,
        RunOutcome,
        _apply,
        finish_run,
        start_run,
    )

    call_command("migrate", verbosity=0)
    team, _ = Team.objects.get_or_create(slug="bench-prepared", defaults={"name": "bench"})
    GatewayToken.objects.filter(team=team).delete()
    _token, plaintext = GatewayToken.issue(team, "bench")
    token_hash = hash_token(plaintext)
    request = validate_run({"agent": "a", "prompt": "p"}, b'{"agent":"a","prompt":"p"}')

    def orm_token():
        keys = RunToolsKey.objects.filter(
            team=OuterRef("team"), is_default=True, revoked_at__isnull=True
        )
        return (
            GatewayToken.objects.filter(token_hash=token_hash)
            .only(*(f for f in fastsql.TOKEN_FIELDS if f != "team"), "team_id")
            .annotate(
                key=Subquery(keys.values("ciphertext")[:1]),
                has_budget=Exists(Budget.objects.filter(team=OuterRef("team"))),
            )
            .first()
        )

    run = start_run(team, request, source="gateway")
    outcome = RunOutcome(status="completed", usage={"inputTokens": 3}, http_status=200)

    def orm_read():
        with transaction.atomic():
            Run.objects.select_for_update().only(*FINISH_READS).get(pk=run.pk)

    def raw_read():
        with transaction.atomic():
            fastsql.run_for_update(run.pk, FINISH_READS)

    def orm_update():
        _apply(run, outcome, run.started_at)
        run.save(update_fields=[*FINISH_WRITES])

    def raw_update():
        _apply(run, outcome, run.started_at)
        fastsql.update(run, FINISH_WRITES)

    def orm_insert():
        Run.objects.create(team=team, source="gateway", agent="a", prompt="p")

    def raw_insert():
        start_run(team, request, source="gateway")

    Price.objects.filter(team=team).delete()
    today = run.started_at.date()
    Price.objects.create(
        team=team, agent="a", effective_from=today, input_per_million=3, output_per_million=15
    )

    def orm_price():
        return (
            Price.objects.filter(team=team, agent__in=["a", ""], effective_from__lte=today)
            .order_by("-agent", "-effective_from")
            .first()
        )

    started = run.started_at
    given = {
        "team_id": team.pk, "source": "gateway", "token_id": run.token_id, "agent": "a",
        "prompt": "p", "config": {}, "metadata": {}, "stream": False, "started_at": started,
        "heartbeat_at": started, "reader": "bench",
    }  # fmt: skip

    def keyword_instance():
        return Run(**given)

    def positional_instance():
        return fastsql.new(Run, given)

    cases = [
        ("a new Run instance (not a statement)", keyword_instance, positional_instance),
        ("token lookup", orm_token, lambda: fastsql.find_token(token_hash)),
        ("Run insert", orm_insert, raw_insert),
        ("finish: read the run, locked", orm_read, raw_read),
        ("finish: update the run", orm_update, raw_update),
        ("finish: the price in force", orm_price, lambda: price_in_force(team.pk, "a", today)),
    ]
    vendor = django.db.connection.vendor
    print(f"{vendor}, best of 5 x {N} calls, µs of CPU per call")
    print("| statement | ORM | prepared | saved |")
    print("|---|---:|---:|---:|")
    for name, orm, raw in cases:
        orm(), raw()  # warm the caches of both
        orm_us, raw_us = _best_us(orm), _best_us(raw)
        print(f"| {name} | {orm_us:.0f} | {raw_us:.0f} | {orm_us - raw_us:.0f} |")
    finish_us = _finish_us(finish_run, start_run, team, request)
    print(f"\nThe whole finish of a JSON run (`finish_run`): {finish_us:.0f} µs of CPU")
    # What the bench wrote, the finishes' rollups included.
    for model in (Run, Price, DailyUsage, DailyRunStats, DailyMetaUsage):
        model.objects.filter(team=team).delete()
    GatewayToken.objects.filter(team=team).delete()
    sys.stdout.flush()


def _finish_us(finish_run, start_run, team, request) -> float:
    """CPU per call of the whole finish (status, usage, price, thread, rollups), best of 5
    batches of N runs, each finished once."""
    from runs.pipeline.recording import RunOutcome

    usage = {"inputTokens": 10, "outputTokens": 20, "totalTokens": 30}
    batches = []
    for _ in range(6):
        runs = [start_run(team, request, source="gateway").pk for _ in range(N)]
        started = time.process_time()
        for run_id in runs:
            finish_run(run_id, RunOutcome(status="completed", usage=usage, http_status=200))
        batches.append((time.process_time() - started) / N * 1e6)
    return min(batches[1:])  # the first batch warms the caches


if __name__ == "__main__":
    main()
