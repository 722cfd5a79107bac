"""Drop the stored frames of old runs: `manage.py prune_events --older-than 90d [--dry-run]`.

Frames (RunEvent rows) are most of the database; a run's summary — status, usage, cost,
timings, prompt and result — stays, and so does the daily rollup, so history and reports are
unchanged. Runs still running are never touched. Work is done in batches of runs, each its own
short transaction, so a large prune never holds the database for long.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from runs.models import Run, RunEvent, RunStatus

UNITS = {"d": "days", "h": "hours", "w": "weeks"}
BATCH = 1000


def parse_age(text: str) -> timedelta:
    """'90d', '12h' or '2w' → a timedelta; anything else is a CommandError."""
    match = re.fullmatch(r"\s*(\d+)\s*([dhw])\s*", text or "")
    if match is None:
        raise CommandError(f"--older-than must look like 90d, 12h or 2w, not {text!r}")
    amount = int(match.group(1))
    if amount < 1:
        raise CommandError("--older-than must be at least 1")
    return timedelta(**{UNITS[match.group(2)]: amount})


class Command(BaseCommand):
    help = "Delete the stored frames of runs older than an age; keep their summaries and usage."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than",
            required=True,
            help="Age of the runs whose frames go, e.g. 90d (days), 12h (hours) or 2w (weeks).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be deleted; delete nothing."
        )

    def handle(self, *args, older_than: str, dry_run: bool, **options) -> None:
        cutoff = timezone.now() - parse_age(older_than)
        old_runs = (
            Run.objects.filter(started_at__lt=cutoff)
            .exclude(status=RunStatus.RUNNING)
            .order_by("pk")
        )
        frames = runs = 0
        last_pk = 0
        while True:
            # Keyset batches on the primary key: each batch is one short transaction.
            batch = list(old_runs.filter(pk__gt=last_pk).values_list("pk", flat=True)[:BATCH])
            if not batch:
                break
            last_pk = batch[-1]
            events = RunEvent.objects.filter(run_id__in=batch)
            if dry_run:
                counted = events.count()
                if counted:
                    frames += counted
                    runs += events.values("run_id").distinct().count()
                continue
            with transaction.atomic():
                touched = events.values("run_id").distinct().count()
                deleted, _ = events.delete()
            frames += deleted
            runs += touched if deleted else 0
        when = cutoff.strftime("%Y-%m-%d %H:%M UTC")
        if dry_run:
            self.stdout.write(
                f"Would delete {frames} frames of {runs} runs started before {when} "
                "(dry run: nothing deleted)."
            )
        else:
            self.stdout.write(
                f"Deleted {frames} frames of {runs} runs started before {when}; "
                "their summaries and usage are kept."
            )
