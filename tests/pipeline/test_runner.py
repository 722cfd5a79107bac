"""The reader ends every run honestly, even when rtdash itself fails mid-stream."""

from __future__ import annotations

import asyncio
import json

import pytest

from runs.core.validation import validate_run
from runs.models import Run
from runs.pipeline.reader import Sink
from runs.pipeline.start import launch

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


class ClientLikeSink(Sink):
    """Takes raw chunks, as the gateway's client does, so the reader parses lazily."""

    async def chunk(self, data: bytes) -> None:
        pass


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_lazily_parsed_stream_is_stored_while_it_goes_on(acme):
    # 40 deltas 50 ms apart: each pause is longer than the reader's idle wait, so frames are
    # parsed and stored during the run, not only once the upstream has ended.
    body = {"agent": "slow-poke", "prompt": "hi"}
    started = await launch(
        acme, validate_run(body, json.dumps(body).encode()), source="playground",
        sinks=[ClientLikeSink()],
    )  # fmt: skip
    assert not started.reader.eager
    stored_mid_run = 0
    for _ in range(100):
        await asyncio.sleep(0.02)
        stored_mid_run = started.reader.writer.stored_through
        if stored_mid_run >= 10:
            break
    assert not started.reader.task.done()
    assert stored_mid_run >= 10
    await started.reader.task
    run = await Run.objects.aget(pk=started.run.pk)
    assert run.status == "completed" and run.frame_count == 43


@pytest.mark.usefixtures("upstream", "acme_key")
async def test_frames_are_stored_during_a_long_pause(acme):
    # After its first frames the stream pauses 1.5 s (a long tool call, say): what came
    # before the pause is stored within the batch interval, not when the next chunk comes.
    body = {
        "agent": "support-chat",
        "prompt": "hi",
        "metadata": {"simulate": {"deltas": 3, "dripMs": 1500}},
    }
    started = await launch(
        acme, validate_run(body, json.dumps(body).encode()), source="playground",
        sinks=[ClientLikeSink()],
    )  # fmt: skip
    try:
        await asyncio.sleep(1.0)
        assert started.reader.outcome.frame_count == 1  # run_started; the next is 0.5 s away
        assert started.reader.writer.stored_through == 1
    finally:
        started.reader.stop()
        await started.reader.finished.wait()


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_playground_run_records_rtdashs_overhead_and_the_upstreams_time(acme, stream):
    body = {"agent": "support-chat", "prompt": "hi", "stream": stream}
    started = await launch(acme, validate_run(body, json.dumps(body).encode()), source="playground")
    if started.reader is not None:
        await started.reader.finished.wait()
    run = await Run.objects.aget(pk=started.run.pk)
    assert run.status == "completed"
    assert run.overhead_ms is not None and run.overhead_ms > 0
    assert run.upstream_ms is not None
