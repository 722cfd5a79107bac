"""What a playground socket (runs.playground.consumers) reads from the database about the run it
watches: the run's state for the browser, and its stored frames in order, a batch at a time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from channels.db import database_sync_to_async

from runs.core.access import current_membership
from runs.models import Membership, Run, RunEvent
from runs.playground.relay import FIRST_TOKEN_EVENTS
from runs.playground.run_summary import browser_state

# Stored frames go to the browser at most this many per message.
REPLAY_BATCH = 1000


@database_sync_to_async
def team_membership(scope):
    request = SimpleNamespace(user=scope["user"], session=scope["session"])
    return current_membership(request)


@database_sync_to_async
def membership_now(user, team_id: int) -> Membership | None:
    """The user's membership in the socket's own team as the database has it now; None once
    removed (or deactivated). Never another team: the page the socket serves showed this one."""
    return (
        Membership.objects.filter(user_id=user.pk, team_id=team_id, user__is_active=True)
        .select_related("team")
        .first()
    )


@database_sync_to_async
def team_run_id(team, run_id: int) -> int | None:
    return Run.objects.filter(team=team, pk=run_id).values_list("pk", flat=True).first()


def _frames_after(run_id: int, after: int, upto: int | None) -> list[list]:
    events = RunEvent.objects.filter(run_id=run_id, sequence__gt=after)
    if upto is not None:
        events = events.filter(sequence__lte=upto)
    rows = events.order_by("sequence").values_list("sequence", "event", "data")[:REPLAY_BATCH]
    return [list(row) for row in rows]


@database_sync_to_async
def run_state(
    run_id: int, after: int | None, first_token_at: float | None = None
) -> tuple[dict, list[list]]:
    """The run for the browser and, in the same trip, its first stored frames after `after`
    (none when `after` is None: the socket has them all)."""
    run = Run.objects.get(pk=run_id)
    if first_token_at is not None:  # the reader saw it go by
        first = datetime.fromtimestamp(first_token_at, UTC)
    else:
        first = (
            RunEvent.objects.filter(run_id=run_id, event__in=FIRST_TOKEN_EVENTS)
            .order_by("sequence")
            .values_list("created_at", flat=True)
            .first()
        )
    frames = _frames_after(run_id, after, None) if after is not None else []
    return browser_state(run, first), frames


@database_sync_to_async
def run_is_finished(run_id: int) -> bool:
    return not Run.objects.filter(pk=run_id, status="running").exists()


@database_sync_to_async
def stored_frames(run_id: int, after: int, upto: int | None = None) -> list[list]:
    return _frames_after(run_id, after, upto)
