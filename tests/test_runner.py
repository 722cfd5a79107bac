"""The reader ends every run honestly, even when rtdash itself fails mid-stream."""

from __future__ import annotations

import json

import pytest

from runs.execution import launch
from runs.models import Run
from runs.runner import Sink
from runs.validation import validate_run

pytestmark = pytest.mark.django_db(transaction=True)


class BrokenSink(Sink):
    """A sink with a bug: it fails on the third chunk."""

    def __init__(self) -> None:
        self.chunks = 0

    async def chunk(self, data: bytes) -> None:
        self.chunks += 1
        if self.chunks == 3:
            raise RuntimeError("a bug in a sink")


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_bug_while_reading_ends_the_run_interrupted_with_its_reason(acme, caplog):
    body = {"agent": "slow-poke", "prompt": "hi", "metadata": {"simulate": {"dripMs": 5}}}
    started = await launch(
        acme, validate_run(body, json.dumps(body).encode()), source="playground",
        sinks=[BrokenSink()],
    )  # fmt: skip
    await started.reader.task
    run = await Run.objects.aget(pk=started.run.pk)
    assert run.status == "interrupted"
    assert run.error_code == "reader_error"
    assert "Reading run" in caplog.text and "a bug in a sink" in caplog.text
