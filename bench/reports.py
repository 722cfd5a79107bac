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

Seeding a million runs takes minutes; `--data DIR` keeps the seeded databases (SQLite in DIR,
PostgreSQL as BENCH_PG_DATABASE) and reuses them on the next run with the same `--runs`. To
iterate on a few pages: `--pages thread,meta: --no-maintenance --no-write` times only the
pages whose URL contains one of the words, skipping the rollup rebuilds. `--code DIR,DIR`
times the same pages with the code of each checkout in turn (`--rounds` times), on the same
database, to compare old and new code in one run.

The pages are served with the settings a deployment has (debug off, bench.harness.production):
with debug on, Django wraps every query to log it, which is not a cost rtdash has in production.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

from bench._results import write_section
from bench.harness import production, summary

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 30
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PG_DATABASE = os.environ.get("BENCH_PG_DATABASE", "reports_bench")
PERIODS = ("7d", "30d", "month", "custom")
GROUPS = ("agent", "user", "token", "day", "thread", "meta:env", "meta:customer")
CUSTOMERS = 200  # distinct `customer` values given to the seeded runs (one run in ten: none)


def _manage(env: dict, *args: str, cwd: Path = ROOT) -> tuple[str, float]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=cwd,
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
    return _postgres_url()


def _postgres_url() -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{PG_DATABASE}"


def _seeded(marker: Path, runs: int) -> dict | None:
    """What a kept database holds (its runs and seed time), if it was seeded with `runs`."""
    if not marker.exists():
        return None
    seeded = json.loads(marker.read_text())
    return seeded if seeded.get("runs") == runs else None


def run_backend(name: str, runs: int, options: argparse.Namespace) -> dict:
    """Seed (or reuse) the backend's database, then time it with each checkout's code."""
    keep = options.data is not None
    scratch = None
    if keep:
        folder = Path(options.data).resolve()
        folder.mkdir(parents=True, exist_ok=True)
    else:
        scratch = tempfile.TemporaryDirectory(prefix="rtdash-bench-reports-")
        folder = Path(scratch.name)
    marker = folder / f"{name}.json"
    seeded = _seeded(marker, runs) if keep else None
    if name == "sqlite":
        url = f"sqlite:///{folder}/bench.sqlite3"
        if seeded is None:
            Path(f"{folder}/bench.sqlite3").unlink(missing_ok=True)
    else:
        url = _postgres_url() if seeded is not None else _postgres_database()
    key_file = folder / "fernet.key"  # the seeded team's secrets stay readable on reuse
    if not key_file.exists():
        key_file.write_text(Fernet.generate_key().decode())
    env = {
        **os.environ,
        **production(None),
        "RTDASH_ENCRYPTION_KEYS": key_file.read_text().strip(),
        "DATABASE_URL": url,
        "RTDASH_LOG_LEVEL": "WARNING",
    }
    checkouts = (
        [Path(code).resolve() for code in options.code.split(",")] if options.code else [ROOT]
    )
    try:
        _manage(env, "migrate", "--noinput")
        if seeded is None:
            print(f"[{name}] seeding {runs:,} runs…", flush=True)
            _out, seed_s = _manage(env, "seed_history", "--runs", str(runs), "--team", "bench")
            seeded = {"runs": runs, "seed_s": seed_s, "prepared": False}
            if keep:
                marker.write_text(json.dumps(seeded))
        print(f"[{name}] seeded ({seeded['seed_s']:.0f} s); measuring…", flush=True)
        worker_args = ["--pages", options.pages or "", "--repeat", str(options.repeat)]
        if options.no_maintenance and seeded.get("prepared"):
            worker_args.append("--no-maintenance")
        rounds = {}
        for round_number in range(options.rounds):
            for code in checkouts:
                label = code.name if len(checkouts) > 1 else "figures"
                figures = _worker(env, code, worker_args)
                worker_args = [arg for arg in worker_args if arg != "--no-maintenance"]
                worker_args.append("--no-maintenance")  # the rollups are built: once is enough
                rounds.setdefault(label, []).append(figures)
                print(f"[{name}] {label} round {round_number + 1} done", flush=True)
        if keep and not seeded.get("prepared"):
            marker.write_text(json.dumps({**seeded, "prepared": True}))
        figures = rounds[next(iter(rounds))][0] if len(rounds) == 1 else {}
        figures["seed_s"] = seeded["seed_s"]
        figures["rounds"] = rounds
        return figures
    finally:
        if not keep:
            if name == "postgres":
                _postgres_database(drop_only=True)
            scratch.cleanup()


def _worker(env: dict, code: Path, worker_args: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "bench.reports", "--worker", *worker_args],
        cwd=code,
        env={**env, "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(f"worker failed:\n{result.stderr[-5000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- The worker: runs inside Django, against the seeded database ----------------------------


def _timed(call, repeat: int) -> dict:
    call()  # warm-up: imports, template compilation, caches
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return summary(samples)


def worker(pages_wanted: list[str], repeat: int, maintenance: bool) -> None:
    """Prepare the seeded database (prices, customers, every rollup rebuilt and timed) unless
    `maintenance` is off, then time the pages whose URL contains one of `pages_wanted` (all
    when empty); prints the figures as one JSON line."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtdash.settings")
    django.setup()
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from runs.models import DailyRunStats, DailyUsage, Run, Team
    from runs.models.usage import DailyMetaUsage

    team = Team.objects.get(slug="bench")
    owner, _ = get_user_model().objects.get_or_create(username="bench-owner")
    figures = {"vendor": connection.vendor}
    if maintenance:
        figures |= _maintenance(team, owner)
    figures |= {
        "runs": Run.objects.filter(team=team).count(),
        "usage_rows": DailyUsage.objects.filter(team=team).count(),
        "stats_rows": DailyRunStats.objects.filter(team=team).count(),
        "meta_rows": DailyMetaUsage.objects.filter(team=team).count(),
    }

    client = Client(HTTP_HOST="localhost")  # one of the default ALLOWED_HOSTS
    client.force_login(owner)
    today = timezone.now().date()
    custom = f"since={today - timedelta(days=89)}&until={today}"

    def page(url: str):
        def call():
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)

        return call

    def wanted(url: str) -> bool:
        return not pages_wanted or any(word in url for word in pages_wanted)

    pages = {}
    for period in PERIODS:
        for group in GROUPS:
            query = f"period={period}&group_by={group}"
            if period == "custom":
                query = f"period=custom&{custom}&group_by={group}"
            if wanted(f"/reports?{query}"):
                pages[f"/reports?{query}"] = _timed(page(f"/reports?{query}"), repeat)
    extras = [
        "/reports/export.csv?period=30d&group_by=agent",
        "/reports/export.csv?period=30d&group_by=thread",
        "/api/usage?group_by=agent",
        "/api/usage?group_by=meta:customer",
        "/reports/export.csv?period=30d&group_by=meta:customer",
        "/api/usage?group_by=day&" + custom,
        "/",
    ]
    figures["pages"] = pages
    figures["extras"] = {url: _timed(page(url), repeat) for url in extras if wanted(url)}
    print(json.dumps(figures))


def _maintenance(team, owner) -> dict:
    """Prices, customers, then every rollup rebuilt from the runs, each timed."""
    from datetime import timedelta

    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from runs.demo.prices import seed_prices
    from runs.models import Membership
    from runs.pipeline.meta_usage import rebuild_meta_usage
    from runs.pipeline.recording import rebuild_usage
    from runs.pipeline.stats import rebuild_run_stats, rebuild_thread_usage

    Membership.objects.get_or_create(user=owner, team=team, defaults={"role": "owner"})
    seed_prices(team, owner)
    _tag_customers(connection, team.pk)
    since = (timezone.now() - timedelta(days=100)).date().isoformat()
    timings = {}
    with open(os.devnull, "w") as silent:
        started = time.perf_counter()
        call_command("recompute_costs", "--since", since, stdout=silent)
        timings["recompute_s"] = time.perf_counter() - started
    for name, rebuild in (
        ("rebuild_usage_s", rebuild_usage),
        ("rebuild_stats_s", rebuild_run_stats),
        ("rebuild_threads_s", rebuild_thread_usage),
        ("rebuild_meta_s", rebuild_meta_usage),
    ):
        started = time.perf_counter()
        rebuild(team)
        timings[name] = time.perf_counter() - started
    if connection.vendor == "postgresql":
        # Re-pricing updates every run and each rebuild deletes and rewrites its rollup: dead
        # rows that autovacuum clears in a deployment. The benchmark's server may run without
        # it, and every page would then read through several dead versions of each row.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    return timings


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


def _markdown(results: dict[str, dict], runs: int, repeat: int) -> str:
    names = list(results)
    lines = [
        "## Reports at a million runs (`bench/reports.py`)",
        "",
        f"`python -m bench.reports --runs {runs}`: `seed_history` writes {runs:,} synthetic runs "
        "over 90 days into a scratch database (kept with `--data`), the team gets prices, "
        "nine runs in ten a `customer` among 200, every rollup is rebuilt, then each page is "
        f"requested {repeat} times (after one warm-up) through Django's test client as a "
        "logged-in owner, with a deployment's settings (debug off): view, queries, SVG charts "
        "and template. Milliseconds.",
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
        "Reports read only rollups: DailyUsage summed in the database (by day and agent for "
        "the chart, by user or token for those reports; exact sums), DailyRunStats (log-scale "
        "histograms, percentiles within ±2.5%) beside it and one whole-day row a day, and "
        "ThreadUsage for the thread report (threads walked by total cost; exact top 100), "
        'DailyMetaUsage summed by value in the database for `meta:<key>` ("(none)" is '
        "DailyUsage's total less them). The custom period is the whole 90 days of history, "
        "the worst case here.",
        "",
        "**Slowest report p95: "
        + ", ".join(f"{n} {worst[n]:.1f} ms" for n in names)
        + "** (target < 50 ms).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--data", help="Keep the seeded databases here and reuse them")
    parser.add_argument("--pages", help="Time only URLs containing one of these, comma-separated")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="Requests per page")
    parser.add_argument(
        "--no-maintenance", action="store_true", help="Reuse the rollups as they are (--data)"
    )
    parser.add_argument("--code", help="Checkouts to time in turn, comma-separated (--rounds)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--write-saved",
        action="store_true",
        help="Write results.md from each backend's last full run kept in --data (one locked "
        "run per backend instead of one for both)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="Print, do not write results.md")
    args = parser.parse_args()
    if args.worker:
        wanted = [word for word in (args.pages or "").split(",") if word]
        worker(wanted, args.repeat, not args.no_maintenance)
        return
    results = {}
    for name in args.backends.split(","):
        saved = Path(args.data or ".") / f"{name}-figures.json"
        if args.write_saved:
            results[name] = json.loads(saved.read_text())
            continue
        results[name] = run_backend(name, args.runs, args)
        if args.data and not (args.code or args.pages or args.no_maintenance):
            kept = {key: value for key, value in results[name].items() if key != "rounds"}
            saved.write_text(json.dumps(kept))  # for --write-saved
    if args.code or args.rounds > 1 or args.pages or args.no_maintenance:
        print(_comparison(results))
        return
    markdown = _markdown(results, args.runs, args.repeat)
    if args.no_write:
        print(markdown)
    else:
        write_section("reports", markdown)


def _comparison(results: dict[str, dict]) -> str:
    """p50 / p95 of each page by backend, checkout and round (for iterating, not results.md)."""
    lines = []
    for backend, figures in results.items():
        for label, rounds in figures["rounds"].items():
            for number, one in enumerate(rounds, 1):
                lines.append(f"## {backend} {label} round {number}")
                for url, figure in {**one["pages"], **one["extras"]}.items():
                    shown = re.sub(r"since=[^&]*&until=[^&]*", "(90 days)", url)
                    lines.append(f"{figure['p50']:7.1f} {figure['p95']:7.1f}  {shown}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
