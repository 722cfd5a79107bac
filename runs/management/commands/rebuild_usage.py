"""Rebuild the daily rollups from the runs: `manage.py rebuild_usage [--since DATE] [--team]`.

Every rollup reports read: DailyUsage (runs.pipeline.recording.rebuild_usage, one grouped
query), the statistics beside it (runs.pipeline.stats.rebuild_run_stats, one pass over the
runs) and the per-thread totals (runs.pipeline.stats.rebuild_thread_usage, one grouped query).
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from runs.management.commands.recompute_costs import parse_day, teams_from
from runs.pipeline.recording import rebuild_usage
from runs.pipeline.stats import rebuild_run_stats, rebuild_thread_usage


class Command(BaseCommand):
    help = "Rebuild the daily usage rollup (and report statistics) from the runs."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--since", help="First day to rebuild (each team's own), YYYY-MM-DD. Default: all."
        )
        parser.add_argument("--team", help="Only this team (slug). Default: every team.")

    def handle(self, *args, since: str | None, team: str | None, **options) -> None:
        first_day = parse_day(since) if since else None
        started = time.perf_counter()
        counted = 0
        for one in teams_from(team):
            counted += rebuild_usage(one, first_day)
            rebuild_run_stats(one, first_day)
            rebuild_thread_usage(one)  # per-thread totals span all days: always whole
        scope = f" since {first_day}" if first_day else ""
        self.stdout.write(
            f"Rebuilt the rollups{scope} from {counted} runs in "
            f"{time.perf_counter() - started:.1f} s."
        )
