"""Follow runs that answered registered/dispatched (or were cut off) to their end; workers
also do this themselves, in their maintenance thread."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from runs.pipeline.follow import follow_due_runs


class Command(BaseCommand):
    help = "Look up the runs whose end RunTools has not told yet, and record how they ended."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--limit", type=int, default=None, help="At most this many runs (default the batch)."
        )

    def handle(self, *args, limit: int | None, **options) -> None:
        if limit is not None and limit < 1:
            raise CommandError("--limit must be 1 or more")
        done = follow_due_runs(limit=limit)
        self.stdout.write(
            f"Finished {len(done.finished)} run(s), {len(done.unfollowable)} unfollowable, "
            f"{len(done.waiting)} still waiting, {len(done.skipped)} held by another worker."
        )
