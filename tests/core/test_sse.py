"""rtdash's incremental SSE parser against the reference reading (httpx-sse, in tests/streams.py).

The reader feeds the parser whatever chunks the network hands it, so a frame, a line ending or
a UTF-8 character can be split anywhere; the parser must find the same frames however the bytes
were cut. It differs from the reference on purpose in two places: a frame without an `event:`
line is named after its `data.type`, and a last frame that lacks its blank line still counts.
"""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from runs.core.sse import SSEParser
from tests.streams import Frame, parse_sse

line_endings = st.sampled_from(["\n", "\r\n", "\r"])
# Any text a field value may hold: no line breaks (they end the line), no surrogates (not UTF-8).
values = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"))
# "message" among them: a frame that names itself so (the SSE default) is named after its
# data.type, as one without an `event:` line is.
event_names = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"))
event_names = event_names.filter(lambda name: name != "")
event_names = st.just("message") | event_names
typed_data = st.builds(lambda name: json.dumps({"type": name}), event_names)


@st.composite
def frame_lines(draw) -> list[str]:
    """The lines of one frame: comments, at most one `event:` line, `data:` lines (or none)."""
    lines = [f":{draw(values)}" for _ in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        lines.append(f"event:{draw(st.sampled_from(['', ' ']))}{draw(event_names)}")
    data = draw(st.lists(values | typed_data, max_size=3))
    lines += [f"data:{draw(st.sampled_from(['', ' ']))}{value}" for value in data]
    return draw(st.permutations(lines))


@st.composite
def streams(draw) -> bytes:
    text = ""

    def end_line() -> str:
        ending = draw(line_endings)
        # A CR followed by an LF is one line ending, not two.
        return "\r" if text.endswith("\r") and ending.startswith("\n") else ending

    for lines in draw(st.lists(frame_lines(), max_size=6)):
        for line in lines:
            text += line
            text += end_line()
        text += end_line()  # the blank line that ends the frame
    return text.encode()


def cut(raw: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(point % (len(raw) + 1) for point in points), len(raw)]
    return [raw[start:end] for start, end in itertools.pairwise(bounds)]


def parse_in_chunks(chunks: list[bytes]) -> list[Frame]:
    parser = SSEParser()
    found = [frame for chunk in chunks for frame in parser.feed(chunk)]
    found += parser.flush()
    return [Frame(frame.event, frame.data) for frame in found]


def named_as_rtdash_names_it(frame: Frame) -> Frame:
    """The reference's frame, renamed after data.type when it had no `event:` line."""
    if frame.event != "message":
        return frame
    try:
        payload = json.loads(frame.data)
    except ValueError:
        return frame
    if isinstance(payload, dict) and isinstance(payload.get("type"), str) and payload["type"]:
        return Frame(payload["type"], frame.data)
    return frame


@settings(max_examples=300, deadline=None)
@given(streams(), st.lists(st.integers(min_value=0), max_size=8))
# Found by Hypothesis: data led by a no-break space is not JSON, so it names nothing.
@example(raw=b'data:\xc2\xa0\ndata:{"type":"0"}\n:\n\n', points=[])
def test_it_finds_the_reference_frames_however_the_bytes_are_cut(raw, points):
    expected = [named_as_rtdash_names_it(frame) for frame in parse_sse(raw).frames]
    assert parse_in_chunks(cut(raw, points)) == expected


def test_it_reads_one_byte_at_a_time():
    raw = ': ping\r\n\r\nevent: a\r\ndata: {"x":\r\ndata: 1}\r\n\r\ndata: é\r\r'.encode()
    chunks = [raw[i : i + 1] for i in range(len(raw))]
    assert parse_in_chunks(chunks) == [("a", '{"x":\n1}'), ("message", "é")]


def test_a_frame_without_an_event_line_is_named_after_its_type():
    frames = parse_in_chunks([b'data: {"type": "run_started"}\n\ndata: [DONE]\n\n'])
    assert frames == [("run_started", '{"type": "run_started"}'), ("message", "[DONE]")]


def test_an_explicit_event_line_wins_over_the_type():
    assert parse_in_chunks([b'event: note\ndata: {"type": "x"}\n\n']) == [("note", '{"type": "x"}')]


def test_event_message_is_the_default_name_so_the_type_names_the_frame():
    raw = b'event: message\ndata: {"type": "run_completed"}\n\nevent: message\ndata: 1\n\n'
    assert parse_in_chunks([raw]) == [
        ("run_completed", '{"type": "run_completed"}'),
        ("message", "1"),
    ]


@pytest.mark.parametrize("cut_at", [0, 1, 2, 3, 4])
def test_a_byte_order_mark_at_the_start_is_dropped_however_it_is_cut(cut_at):
    raw = b'\xef\xbb\xbfdata: {"n": 1}\n\n'
    assert parse_in_chunks([raw[:cut_at], raw[cut_at:]]) == [("message", '{"n": 1}')]


def test_only_the_stream_s_first_byte_order_mark_is_dropped():
    raw = b"data: 1\n\n\xef\xbb\xbfdata: 2\n\n"
    # Mid-stream the mark is part of the next line, whose field it then names (no field).
    assert parse_in_chunks([raw]) == [("message", "1")]


def test_a_stream_of_nothing_but_part_of_a_mark_has_no_frame():
    assert parse_in_chunks([b"\xef\xbb"]) == []


def test_a_last_frame_without_its_blank_line_still_counts():
    assert parse_in_chunks([b"event: a\ndata: 1\n\nevent: b\ndata: 2"]) == [("a", "1"), ("b", "2")]


def test_comments_and_empty_blocks_make_no_frames():
    assert parse_in_chunks([b": ping\n\n\n\n:\n\nid: 7\nretry: 10\n\n"]) == []


# --- the tests' reference parser (tests/streams.py) -------------------------------------------


def test_the_reference_reads_frames_comments_multiline_data_and_leftovers():
    stream = parse_sse(': ping\n\nevent: a\ndata: {"x":\ndata: 1}\n\ndata: plain\r\n\r\nevent: b\n')
    assert stream.frames == [("a", '{"x":\n1}'), ("message", "plain")]
    assert stream.comments == ["ping"]
    assert stream.leftover == "event: b\n"
