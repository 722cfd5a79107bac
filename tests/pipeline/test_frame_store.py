"""runs.pipeline.frames: every run's frames in one transaction, in order; a bad run alone fails."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from runs.core.validation import RunRequest
from runs.models import Run, RunEvent
from runs.pipeline.frames import FrameStore
from runs.pipeline.recording import start_run

pytestmark = pytest.mark.django_db(transaction=True)


def _new_run(team) -> int:
    request = RunRequest("support-chat", "hi", None, "", True, {}, {}, b"{}")
    return start_run(team, request, source="gateway").pk


def _rows(first: int, count: int) -> list:
    now = timezone.now()
    return [(seq, "delta", f'{{"n": {seq}}}', now) for seq in range(first, first + count)]


def _stored(run_id: int) -> list[int]:
    return list(
        RunEvent.objects.filter(run_id=run_id).order_by("id").values_list("sequence", flat=True)
    )


async def test_batches_of_several_runs_are_stored_in_order_with_heartbeats(acme):
    one, two = [await sync_to_async(_new_run)(acme) for _ in range(2)]
    await Run.objects.filter(pk__in=[one, two]).aupdate(heartbeat_at=None)
    store = FrameStore()
    # Handed in while the first write is in flight: the rest go together in the next one.
    writes = [
        store.write(one, _rows(1, 3)),
        store.write(two, _rows(1, 2)),
        store.write(one, _rows(4, 2)),
        store.write(two, _rows(3, 1)),
    ]
    await asyncio.gather(*writes)
    assert await sync_to_async(_stored)(one) == [1, 2, 3, 4, 5]
    assert await sync_to_async(_stored)(two) == [1, 2, 3]
    heartbeats = Run.objects.filter(pk__in=[one, two], heartbeat_at__isnull=False)
    assert await heartbeats.acount() == 2


async def test_a_run_whose_frames_cannot_be_stored_does_not_cost_the_others_theirs(acme):
    kept, deleted = [await sync_to_async(_new_run)(acme) for _ in range(2)]
    await Run.objects.filter(pk=deleted).adelete()  # its frames now break a foreign key
    store = FrameStore()
    first = store.write(kept, _rows(1, 1))  # written alone, at once
    good, bad = store.write(kept, _rows(2, 2)), store.write(deleted, _rows(1, 2))
    await first
    await good
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        await bad
    assert await sync_to_async(_stored)(kept) == [1, 2, 3]
    assert await RunEvent.objects.filter(run_id=deleted).acount() == 0
