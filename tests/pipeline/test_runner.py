"""The reader ends every run honestly, even when rtdash itself fails mid-stream."""

from __future__ import annotations

import asyncio
import json
from http.server import BaseHTTPRequestHandler

import pytest

from runs.core.validation import validate_run
from runs.models import Run
from runs.pipeline.reader import SINK_TURNS, RunReader, Sink
from runs.pipeline.start import launch
from tests.helpers import loopback_upstream

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


class _OneWriteStream(BaseHTTPRequestHandler):
    """Answers a run with a whole event stream in one write: its headers, and its three frames
    as three chunks of the body (chunked), then the body's end."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        frames = [
            b"event: %s\ndata: %s\n\n" % (event, json.dumps(data).encode())
            for event, data in [
                (b"run_started", {"runId": "run_1", "threadId": "thr_1"}),
                (b"assistant_message_delta", {"delta": "Hi"}),
                (b"run_completed", {"result": "Hi", "usage": {"inputTokens": 1}}),
            ]
        ]
        body = b"".join(b"%x\r\n%s\r\n" % (len(frame), frame) for frame in frames) + b"0\r\n\r\n"
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        self.wfile.write(head + b"Transfer-Encoding: chunked\r\n\r\n" + body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def one_write_upstream(settings):
    with loopback_upstream(settings, _OneWriteStream):
        yield


class ConsumerSink(Sink):
    """A client's sink as the gateway has it: each chunk is taken by its consumer (the
    gateway's response, starting in its own task: two or three turns) `turns` turns of the
    event loop later, or never; the stream's end is noted."""

    def __init__(self, turns: int | None = 5) -> None:
        self.events: list[str] = []
        self.turns = turns
        self.held = 0
        self.asked = 0

    async def chunk(self, data: bytes) -> None:
        self.events.append("chunk")
        self.held += 1
        if self.turns is not None:
            self._consume_in(self.turns)

    def _consume_in(self, turns: int) -> None:
        if turns:
            asyncio.get_running_loop().call_soon(self._consume_in, turns - 1)
        else:
            self.held -= 1
            self.events.append("consumed")

    def holding(self) -> bool:
        self.asked += 1
        return self.held > 0

    async def end(self, outcome, injected) -> None:
        self.events.append("end")


def _launched_stream(acme, sink: ConsumerSink, monkeypatch):
    """The run's stream, with the reader's examination of its end noted among the sink's
    events."""
    examine = RunReader._final_frame_seen

    def examined(reader: RunReader) -> bool:
        sink.events.append("examined")
        return examine(reader)

    monkeypatch.setattr(RunReader, "_final_frame_seen", examined)
    body = {"agent": "support-chat", "prompt": "hi"}
    return launch(
        acme, validate_run(body, json.dumps(body).encode()), source="playground", sinks=[sink]
    )


@pytest.mark.usefixtures("one_write_upstream", "acme_key")
async def test_a_stream_that_arrived_at_once_reaches_its_client_before_its_end_is_examined(
    acme, monkeypatch
):
    # The whole answer came in one read, with its headers: the reader has all of it without
    # waiting. The client's consumer still takes the first chunk before the reader reads on,
    # and the last before the reader examines the stream's end (parsing its tail) and ends
    # the sinks.
    sink = ConsumerSink()
    started = await _launched_stream(acme, sink, monkeypatch)
    await started.reader.finished.wait()
    assert sink.events == [
        "chunk", "consumed", "chunk", "chunk", "consumed", "consumed", "examined", "end"
    ]  # fmt: skip
    run = await Run.objects.aget(pk=started.run.pk)
    assert run.status == "completed" and run.frame_count == 3


@pytest.mark.usefixtures("one_write_upstream", "acme_key")
async def test_a_consumer_that_never_comes_costs_the_reader_a_few_turns(acme, monkeypatch):
    sink = ConsumerSink(turns=None)
    started = await _launched_stream(acme, sink, monkeypatch)
    await asyncio.wait_for(started.reader.finished.wait(), timeout=10)
    assert sink.events == ["chunk", "chunk", "chunk", "examined", "end"]
    assert sink.asked == 2 * SINK_TURNS  # after the first chunk, and at the end
    run = await Run.objects.aget(pk=started.run.pk)
    assert run.status == "completed" and run.frame_count == 3


class InterruptedAtTheEndSink(ConsumerSink):
    """A client that never takes its chunks; once the upstream has ended, while the reader
    waits for the client, the run is stopped (the playground's Stop) or its task cancelled
    (the worker shutting down)."""

    def __init__(self, how: str) -> None:
        super().__init__(turns=None)
        self.how = how
        self.reader: RunReader | None = None

    def holding(self) -> bool:
        reader = self.reader
        if reader is not None and reader.response.is_closed and self.asked == SINK_TURNS:
            if self.how == "stop":
                reader.stop()
            else:
                reader.task.cancel()
        return super().holding()


@pytest.mark.parametrize("how", ["stop", "shutdown"])
@pytest.mark.usefixtures("one_write_upstream", "acme_key")
async def test_a_run_interrupted_once_its_upstream_has_ended_is_recorded_as_it_ended(
    acme, monkeypatch, how
):
    sink = InterruptedAtTheEndSink(how)
    started = await _launched_stream(acme, sink, monkeypatch)
    sink.reader = started.reader
    await asyncio.wait_for(started.reader.finished.wait(), timeout=10)
    assert sink.events == ["chunk", "chunk", "chunk", "examined", "end"]
    run = await Run.objects.aget(pk=started.run.pk)
    assert run.status == "completed" and run.frame_count == 3
    assert started.reader.task.cancelled() == (how == "shutdown")
