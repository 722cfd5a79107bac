"""Reports at a million runs, on SQLite and on PostgreSQL.

For each database: a scratch database, `seed_history --runs N` (synthetic runs over 90 days,
marked synthetic), prices for the team, then timed:

- `recompute_costs` (re-price every run and rebuild the rollups) and `rebuild_usage` (all
  rollups from the runs);
- `rebuild_meta_usage` alone (the metadata rollup, also part of `rebuild_usage`), after 90% of
  the runs are given a `customer` among 200 (the seed's runs already carry `env`);
- every report page, `/reports?period=P&group_by=G` for each period and grouping (with
  `meta:env` and `meta:customer`), rendered
  through Django's test client as a logged-in owner (view, queries, charts and template), plus
  the CSV export, `/api/usage` and the overview `/`, REPEAT times each after one warm-up.

    .venv/bin/python -m bench.reports [--runs 1000000] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._results import write_section
from bench.harness import summary

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 30
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PG_DATABASE = "rtdash_bench_reports"
PERIODS = ("7d", "30d", "month", "custom")
GROUPS = ("agent", "user", "token", "day", "thread", "meta:env", "meta:customer")
CUSTOMERS = 200  # distinct `customer` values given to the seeded runs (one run in ten: none)


def _manage(env: dict, *args: str) -> tuple[str, float]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip(), time.perf_counter() - started


def _postgres_database(drop_only: bool = False) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
        if not drop_only:
            connection.execute(f"CREATE DATABASE {PG_DATABASE}")
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{PG_DATABASE}"


def run_backend(name: str, runs: int) -> dict:
    scratch = tempfile.TemporaryDirectory(prefix="rtdash-bench-reports-")
    url = f"sqlite:///{scratch.name}/bench.sqlite3" if name == "sqlite" else _postgres_database()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "RTDASH_DEBUG": "1",
        "RTDASH_LOG_LEVEL": "WARNING",
    }
    try:
        _manage(env, "migrate", "--noinput")
        print(f"[{name}] seeding {runs:,} runs…", flush=True)
        _out, seeded = _manage(env, "seed_history", "--runs", str(runs), "--team", "bench")
        print(f"[{name}] seeded in {seeded:.0f} s; measuring…", flush=True)
        result = subprocess.run(
            [sys.executable, "-m", "bench.reports", "--worker"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode:
            raise RuntimeError(f"worker failed:\n{result.stderr[-5000:]}")
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        figures["seed_s"] = seeded
        return figures
    finally:
        if name == "postgres":
            _postgres_database(drop_only=True)
        scratch.cleanup()


# --- The worker: runs inside Django, against the seeded database ----------------------------


def _timed(call, repeat: int = REPEAT) -> dict:
    call()  # warm-up: imports, template compilation, caches
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return summary(samples)


def worker() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtdash.settings")
    django.setup()
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from runs.demo.prices import seed_prices
    from runs.models import DailyRunStats, DailyUsage, Membership, Run, Team

    team = Team.objects.get(slug="bench")
    owner, _ = get_user_model().objects.get_or_create(username="bench-owner")
    Membership.objects.get_or_create(user=owner, team=team, defaults={"role": "owner"})
    seed_prices(team, owner)
    total_runs = Run.objects.filter(team=team).count()
    _tag_customers(connection, team.pk)
    since = (timezone.now() - timedelta(days=100)).date().isoformat()
    silent = open(os.devnull, "w")  # noqa: SIM115 - closed below
    started = time.perf_counter()
    call_command("recompute_costs", "--since", since, stdout=silent)
    recompute_s = time.perf_counter() - started
    from runs.pipeline.recording import rebuild_usage
    from runs.pipeline.stats import rebuild_run_stats, rebuild_thread_usage

    started = time.perf_counter()
    rebuild_usage(team)
    usage_s = time.perf_counter() - started
    started = time.perf_counter()
    rebuild_run_stats(team)
    stats_s = time.perf_counter() - started
    started = time.perf_counter()
    rebuild_thread_usage(team)
    threads_s = time.perf_counter() - started
    from runs.models.usage import DailyMetaUsage
    from runs.pipeline.meta_usage import rebuild_meta_usage

    started = time.perf_counter()
    rebuild_meta_usage(team)
    meta_s = time.perf_counter() - started
    silent.close()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

    client = Client(HTTP_HOST="localhost")  # one of the default ALLOWED_HOSTS
    client.force_login(owner)
    today = timezone.now().date()
    custom = f"since={today - timedelta(days=89)}&until={today}"

    def page(url: str):
        def call():
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)

        return call

    pages = {}
    for period in PERIODS:
        for group in GROUPS:
            query = f"period={period}&group_by={group}"
            if period == "custom":
                query = f"period=custom&{custom}&group_by={group}"
            pages[f"/reports?{query}"] = _timed(page(f"/reports?{query}"))
    extras = {
        "/reports/export.csv?period=30d&group_by=agent": None,
        "/reports/export.csv?period=30d&group_by=thread": None,
        "/api/usage?group_by=agent": None,
        "/api/usage?group_by=meta:customer": None,
        "/reports/export.csv?period=30d&group_by=meta:customer": None,
        "/api/usage?group_by=day&" + custom: None,
        "/": None,
    }
    for url in extras:
        extras[url] = _timed(page(url))
    figures = {
        "vendor": connection.vendor,
        "runs": total_runs,
        "usage_rows": DailyUsage.objects.filter(team=team).count(),
        "stats_rows": DailyRunStats.objects.filter(team=team).count(),
        "meta_rows": DailyMetaUsage.objects.filter(team=team).count(),
        "rebuild_meta_s": meta_s,
        "recompute_s": recompute_s,
        "rebuild_usage_s": usage_s,
        "rebuild_stats_s": stats_s,
        "rebuild_threads_s": threads_s,
        "pages": pages,
        "extras": extras,
    }
    print(json.dumps(figures))


def _tag_customers(connection, team_id: int) -> None:
    """Give nine runs in ten a `customer` among CUSTOMERS, in one UPDATE (the seed has none)."""
    from runs.models import Run

    table = connection.ops.quote_name(Run._meta.db_table)
    if connection.vendor == "postgresql":
        added = f"metadata || jsonb_build_object('customer', 'cust-' || (id %% {CUSTOMERS}))"
    else:
        added = f"json_set(metadata, '$.customer', 'cust-' || (id %% {CUSTOMERS}))"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET metadata = {added} WHERE team_id = %s AND id %% 10 != 0",  # noqa: S608 - constants only, the id bound
            [team_id],
        )


# --- Results --------------------------------------------------------------------------------


def _rebuild_s(figures: dict) -> float:
    return figures["rebuild_usage_s"] + figures["rebuild_stats_s"] + figures["rebuild_threads_s"]


def _markdown(results: dict[str, dict], runs: int) -> str:
    names = list(results)
    lines = [
        "## Reports at a million runs (`bench/reports.py`)",
        "",
        f"`python -m bench.reports --runs {runs}`: `seed_history` writes {runs:,} synthetic runs "
        "over 90 days into a scratch database, the team gets prices, then each page is "
        f"requested {REPEAT} times (after one warm-up) through Django's test client as a "
        "logged-in owner: view, queries, SVG charts and template. Milliseconds.",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]

    def row(label, values):
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    row("runs", [f"{results[n]['runs']:,}" for n in names])
    row("seed_history", [f"{results[n]['seed_s']:.0f} s" for n in names])
    row(
        "rollup rows (usage + statistics)",
        [f"{results[n]['usage_rows']:,} + {results[n]['stats_rows']:,}" for n in names],
    )
    row(
        "**rebuild_usage** (usage + statistics + threads)",
        [
            f"**{_rebuild_s(results[n]):.1f} s** ({results[n]['rebuild_usage_s']:.1f} + "
            f"{results[n]['rebuild_stats_s']:.1f} + {results[n]['rebuild_threads_s']:.1f})"
            for n in names
        ],
    )
    row(
        "metadata rollup rows / rebuild_meta_usage (in rebuild_usage)",
        [f"{results[n]['meta_rows']:,} / {results[n]['rebuild_meta_s']:.1f} s" for n in names],
    )
    row(
        "recompute_costs (re-price all, rebuild)",
        [f"{results[n]['recompute_s']:.1f} s" for n in names],
    )
    lines += ["", "Report pages, p50 / p95 (ms):", ""]
    lines += ["| page | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    worst = dict.fromkeys(names, 0.0)
    for url in results[names[0]]["pages"]:
        cells = []
        for n in names:
            figure = results[n]["pages"][url]
            worst[n] = max(worst[n], figure["p95"])
            cells.append(f"{figure['p50']:.1f} / {figure['p95']:.1f}")
        shown = url.split("?", 1)[1]
        if "since=" in shown:  # the custom period: its dates change every day
            shown = "period=custom (90 days)&" + shown.split("&")[-1]
        lines.append(f"| `{shown}` | " + " | ".join(cells) + " |")
    lines += ["", "Other endpoints, p50 / p95 (ms):", ""]
    lines += ["| endpoint | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for url in results[names[0]]["extras"]:
        cells = []
        for n in names:
            figure = results[n]["extras"][url]
            cells.append(f"{figure['p50']:.1f} / {figure['p95']:.1f}")
        shown = url if "since=" not in url else url.split("&since=")[0] + " (90 days)"
        lines.append(f"| `{shown}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Reports read only rollups: DailyUsage for sums, DailyRunStats (log-scale histograms, "
        "percentiles within ±2.5%) beside it and one whole-day row a day, and ThreadUsage for "
        "the thread report (threads walked by total cost; exact top 100), DailyMetaUsage for "
        '`meta:<key>` (one row per key, day and value; "(none)" is DailyUsage\'s total less '
        "them). The custom period "
        "is the whole 90 days of history, the worst case here.",
        "",
        "**Slowest report p95: "
        + ", ".join(f"{n} {worst[n]:.1f} ms" for n in names)
        + "** (target < 100 ms).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="Print, do not write results.md")
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    results = {}
    for name in args.backends.split(","):
        results[name] = run_backend(name, args.runs)
    markdown = _markdown(results, args.runs)
    if args.no_write:
        print(markdown)
    else:
        write_section("reports", markdown)


if __name__ == "__main__":
    main()
