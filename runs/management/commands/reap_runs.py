"""End runs whose reader died (for cron, or after a crash); workers also do this themselves."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from runs.pipeline.reaper import reap_stale_runs


class Command(BaseCommand):
    help = "End `running` runs whose reader stopped sending heartbeats, as `interrupted`."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--stale-after",
            type=float,
            default=None,
            help=f"Seconds without a heartbeat (default {settings.RTDASH_REAPER_STALE_SECONDS}).",
        )

    def handle(self, *args, stale_after: float | None, **options) -> None:
        if stale_after is not None and stale_after < 0:
            raise CommandError("--stale-after must be 0 or more")
        reaped = reap_stale_runs(stale_after)
        self.stdout.write(f"Ended {len(reaped)} run(s) as interrupted.")
