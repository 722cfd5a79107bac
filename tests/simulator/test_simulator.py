"""Contract tests for the RunTools simulator, against the real server on a free loopback port.

No Django and no database: only plain httpx talking to `python -m simulator`. Expected texts
and token counts are exact because the simulator's scripts are deterministic; the derivation of
each number is in simulator/agents.py (4 characters a token, 4 tokens of framing per message,
96 tokens of history per earlier turn, the agent's system tokens).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from simulator.testing import SimulatorServer
from tests.streams import Stream, parse_sse

DEMO = "rt_test_demo"
OTHER = "rt_test_other"
# Tests that count threads each take a key nobody else has used, so their lists start empty.
SPARE_KEYS = tuple(f"rt_test_spare{i}" for i in range(64))
_spare = iter(SPARE_KEYS)

SUPPORT_PROMPT = "My invoice is wrong"
SUPPORT_ANSWER = (
    'Thanks for reaching out about "My invoice is wrong". '
    "I checked the account settings and everything looks in order."
)
SUPPORT_DELTAS = [
    "Thanks for ",
    "reaching out ",
    'about "My ',
    "invoice is ",
    'wrong". I ',
    "checked the ",
    "account settings ",
    "and everything ",
    "looks in ",
    "order.",
]
# 180 system + (ceil(19 / 4) = 5) + 4 framing = 189 in; ceil(114 / 4) = 29 out.
SUPPORT_USAGE = {"inputTokens": 189, "outputTokens": 29, "totalTokens": 218}

CODE_PROMPT = "Run the tests and summarize failures."
CODE_ANSWER = (
    'I read README.md and ran the test suite for "Run the tests and summarize failures": '
    "32 passed, 0 failed. The code looks healthy, so no change is needed yet."
)
README_OUTPUT = (
    '# README.md\ndef main() -> None:\n    """Run the tests and summarize failures"""\n    run()\n'
)
TESTS_OUTPUT = "collected 32 items\n" + "." * 32 + " [100%]\n32 passed in 0.46s\n"

pytestmark = []


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(keys=(DEMO, OTHER, *SPARE_KEYS)) as server:
        yield server


def _client(sim: SimulatorServer, key: str | None) -> httpx.Client:
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(base_url=sim.url, headers=headers, timeout=10)


@pytest.fixture
def api(sim: SimulatorServer) -> Iterator[httpx.Client]:
    with _client(sim, DEMO) as client:
        yield client


@pytest.fixture
def fresh(sim: SimulatorServer) -> Iterator[httpx.Client]:
    """A client whose key no other test has used: its thread store starts empty."""
    with _client(sim, next(_spare)) as client:
        yield client


def names(stream: Stream) -> list[str]:
    return [frame.event for frame in stream.frames]


def squash(frame_names: list[str]) -> list[str]:
    """Runs of equal names collapsed to `name*count`, to assert a frame sequence compactly."""
    return [
        f"{name}*{n}" if (n := len(list(group))) > 1 else name
        for name, group in itertools.groupby(frame_names)
    ]


def run(client: httpx.Client, path: str = "/run", **body: Any) -> httpx.Response:
    return client.post(path, json=body)


def run_json(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = run(client, stream=False, **body)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def run_stream(
    client: httpx.Client, path: str = "/run", **body: Any
) -> tuple[httpx.Response, Stream]:
    response = run(client, path, **body)
    assert response.status_code == 200, response.text
    return response, parse_sse(response.text)


def simulate(**faults: Any) -> dict[str, Any]:
    return {"metadata": {"simulate": faults}}


def assert_error(response: httpx.Response, status: int, code: str, mentions: str = "") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["requestId"].startswith("req_")
    assert mentions in error["message"]


def thread_events(client: httpx.Client, thread_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/threads/{thread_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]["events"]


# --- health, auth, envelopes ------------------------------------------------------------------


def test_healthz_needs_no_key(sim: SimulatorServer) -> None:
    response = httpx.get(sim.root + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_it_requires_a_key(sim: SimulatorServer) -> None:
    with _client(sim, None) as client:
        assert_error(client.get("/agents"), 401, "unauthorized")
        assert_error(client.post("/run", json={"agent": "support-chat"}), 401, "unauthorized")


@pytest.mark.parametrize("key", ["rt_test_nobody", "sk_test_demo", "Bearer"])
def test_it_rejects_invalid_keys(sim: SimulatorServer, key: str) -> None:
    with _client(sim, key) as client:
        assert_error(client.get("/agents"), 401, "invalid_token")


def test_it_accepts_a_bearer_token(sim: SimulatorServer) -> None:
    response = httpx.get(sim.url + "/agents", headers={"Authorization": f"Bearer {OTHER}"})
    assert response.status_code == 200
    wrong = httpx.get(sim.url + "/agents", headers={"Authorization": "Basic cnRfdGVzdF9kZW1v"})
    assert_error(wrong, 401, "unauthorized")


def test_success_envelope_has_request_id_and_rate_headers(api: httpx.Client) -> None:
    response = api.get("/agents")
    body = response.json()
    assert set(body) == {"data", "meta"}
    assert re.fullmatch(r"req_[0-9a-f]{16}", body["meta"]["requestId"])
    assert response.headers["x-request-id"] == body["meta"]["requestId"]
    assert response.headers["x-ratelimit-limit"] == "1000"
    assert 0 <= int(response.headers["x-ratelimit-remaining"]) < 1000
    assert int(response.headers["x-ratelimit-reset"]) > time.time()


def test_unknown_path_is_a_404_envelope(api: httpx.Client, sim: SimulatorServer) -> None:
    assert_error(api.get("/nothing/here"), 404, "not_found")
    assert_error(httpx.get(sim.root + "/elsewhere"), 404, "not_found")


def test_it_rejects_wrong_methods(api: httpx.Client) -> None:
    # GET /v1/run is the runs list, so PUT is the wrong method here.
    response = api.put("/run")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"
    assert_error(api.put("/threads/thr_x"), 405, "method_not_allowed")
    assert_error(api.delete("/agents"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("content", "mentions"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"prompt"', "JSON object"),
        (b"", "JSON object"),
        (b"\xff\xfe", "malformed JSON"),
    ],
)
def test_it_rejects_bodies_that_are_not_json_objects(
    api: httpx.Client, content: bytes, mentions: str
) -> None:
    assert_error(api.post("/run", content=content), 400, "bad_request", mentions)


# --- agents and models ------------------------------------------------------------------------


def test_it_lists_agents(api: httpx.Client) -> None:
    agents = api.get("/agents").json()["data"]
    modes = {agent["slug"]: agent["executionMode"] for agent in agents}
    assert modes == {
        "code-assistant": "in_sandbox",
        "support-chat": "managed",
        "deep-thinker": "managed",
        "slow-poke": "in_sandbox",
    }
    for agent in agents:
        assert set(agent) == {
            "id",
            "slug",
            "name",
            "description",
            "model",
            "executionMode",
            "status",
            "createdAt",
            "updatedAt",
        }
        assert agent["status"] == "active"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", agent["createdAt"])


def test_it_gets_an_agent_by_slug_or_id(api: httpx.Client) -> None:
    agent = api.get("/agents/deep-thinker").json()["data"]
    assert agent["name"] == "Deep Thinker"
    assert api.get(f"/agents/{agent['id']}").json()["data"] == agent
    assert_error(api.get("/agents/no-such-agent"), 404, "not_found", "no-such-agent")


def test_it_lists_available_models(api: httpx.Client) -> None:
    data = api.get("/models/available").json()["data"]
    assert set(data) == {"platform", "byok"}
    for model in data["platform"] + data["byok"]:
        assert set(model) == {"model", "displayName", "available"}
    agent_models = {a["model"] for a in api.get("/agents").json()["data"]}
    available = {m["model"] for m in data["platform"] if m["available"]}
    assert agent_models <= available


# --- POST /v1/run, JSON -----------------------------------------------------------------------


def test_support_chat_answers_in_json(api: httpx.Client) -> None:
    data = run_json(api, agent="support-chat", prompt=SUPPORT_PROMPT)
    assert set(data) == {
        "runId",
        "sandboxId",
        "executionMode",
        "status",
        "result",
        "usage",
        "iterations",
        "threadId",
    }
    assert re.fullmatch(r"run_[0-9a-f]{16}", data["runId"])
    assert re.fullmatch(r"thr_[0-9a-f]{16}", data["threadId"])
    assert data["sandboxId"] is None
    assert data["executionMode"] == "managed"
    assert data["status"] == "completed"
    assert data["result"] == SUPPORT_ANSWER
    assert data["usage"] == SUPPORT_USAGE
    assert data["iterations"] == 1


def test_the_same_request_gives_the_same_answer(api: httpx.Client) -> None:
    first = run_json(api, agent="deep-thinker", prompt="Why is the sky blue?")
    second = run_json(api, agent="deep-thinker", prompt="Why is the sky blue?")
    assert first["runId"] != second["runId"]
    assert first["threadId"] != second["threadId"]
    assert (first["result"], first["usage"]) == (second["result"], second["usage"])


@pytest.mark.parametrize(
    ("max_turns", "iterations", "usage", "answer_start"),
    [
        (
            None,
            3,
            {"inputTokens": 477, "outputTokens": 39, "totalTokens": 516},
            "I read README.md and ran",
        ),
        (
            2,
            2,
            {"inputTokens": 457, "outputTokens": 38, "totalTokens": 495},
            "I read README.md for",
        ),
        (1, 1, {"inputTokens": 434, "outputTokens": 36, "totalTokens": 470}, "With a single turn"),
    ],
)
def test_code_assistant_respects_max_turns(
    api: httpx.Client,
    max_turns: int | None,
    iterations: int,
    usage: dict[str, int],
    answer_start: str,
) -> None:
    config = {"maxTurns": max_turns} if max_turns else {}
    data = run_json(api, agent="code-assistant", prompt=CODE_PROMPT, config=config)
    assert data["iterations"] == iterations
    assert data["usage"] == usage
    assert data["result"].startswith(answer_start)
    assert data["executionMode"] == "in_sandbox"
    assert re.fullmatch(r"sandbox-[0-9a-f]{12}", data["sandboxId"])
    if max_turns is None:
        assert data["result"] == CODE_ANSWER


def test_code_assistant_reads_the_file_the_prompt_names(api: httpx.Client) -> None:
    data = run_json(api, agent="code-assistant", prompt="Why does app/models.py fail?")
    assert data["result"].startswith("I read app/models.py and ran the test suite")
    events = thread_events(api, data["threadId"])
    assert events[1]["payload"]["input"] == {"path": "app/models.py"}


def test_deep_thinker_reports_reasoning_tokens(api: httpx.Client) -> None:
    data = run_json(api, agent="deep-thinker", prompt="Why is the sky blue?")
    assert data["result"] == (
        'After weighing 3 considerations about "Why is the sky blue": '
        "the simplest explanation fits the facts best."
    )
    assert data["usage"] == {
        "inputTokens": 269,
        "outputTokens": 27,
        "reasoningTokens": 42,
        "totalTokens": 296,
    }


def test_slow_poke_in_json_is_not_slowed(api: httpx.Client) -> None:
    started = time.monotonic()
    data = run_json(api, agent="slow-poke", prompt="Count to forty please")
    # Its stream takes two seconds of pauses; JSON takes none (the margin is for busy machines).
    assert time.monotonic() - started < 1.5
    assert len(data["result"].split()) == 40
    assert data["result"].startswith("Taking it slowly: Count to forty please one word")


@pytest.mark.parametrize("max_tokens", [1, 5, 20])
def test_max_tokens_truncates_the_answer(api: httpx.Client, max_tokens: int) -> None:
    data = run_json(
        api, agent="support-chat", prompt=SUPPORT_PROMPT, config={"maxTokens": max_tokens}
    )
    assert data["usage"]["outputTokens"] == max_tokens
    assert data["result"] == SUPPORT_ANSWER[: max_tokens * 4]


def test_a_generous_max_tokens_changes_nothing(api: httpx.Client) -> None:
    data = run_json(
        api,
        agent="support-chat",
        prompt=SUPPORT_PROMPT,
        config={"maxTokens": 128000, "temperature": 0.2},
    )
    assert (data["result"], data["usage"]) == (SUPPORT_ANSWER, SUPPORT_USAGE)


def test_it_takes_caller_managed_messages(api: httpx.Client) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "parts": [{"type": "text", "text": "Hello! How can I help?"}]},
        # An empty content string next to text parts, as SDKs send it: the parts count.
        {"role": "user", "content": "", "parts": [{"type": "text", "text": SUPPORT_PROMPT}]},
    ]
    data = run_json(api, agent="support-chat", messages=messages)
    assert data["result"] == SUPPORT_ANSWER
    # 180 + (4+4) + (1+4) + (6+4) + (5+4): every message is billed.
    assert data["usage"] == {"inputTokens": 212, "outputTokens": 29, "totalTokens": 241}
    events = thread_events(api, data["threadId"])
    assert events[0]["payload"] == {"role": "user", "content": SUPPORT_PROMPT}


def test_the_legacy_path_runs_the_same_agent(api: httpx.Client) -> None:
    response = api.post(
        "/agents/support-chat/run", json={"prompt": SUPPORT_PROMPT, "stream": False}
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert (data["result"], data["usage"]) == (SUPPORT_ANSWER, SUPPORT_USAGE)
    assert_error(api.post("/agents/nobody/run", json={"prompt": "hi"}), 404, "not_found", "nobody")


def test_unknown_agent_is_404(api: httpx.Client) -> None:
    assert_error(run(api, agent="ghost", prompt="hi"), 404, "not_found", "ghost")


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"prompt": "hi"}, "agent"),
        ({"agent": 7, "prompt": "hi"}, "agent"),
        ({"agent": "support-chat"}, "prompt or messages"),
        ({"agent": "support-chat", "prompt": 5}, "prompt"),
        ({"agent": "support-chat", "prompt": "   "}, "prompt or messages"),
        ({"agent": "support-chat", "messages": "hi"}, "messages"),
        ({"agent": "support-chat", "messages": []}, "prompt or messages"),
        ({"agent": "support-chat", "messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"agent": "support-chat", "messages": [{"role": "user", "content": 3}]}, "messages[0]"),
        ({"agent": "support-chat", "messages": [{"role": "system", "content": "x"}]}, "user"),
        ({"agent": "support-chat", "prompt": "hi", "stream": "no"}, "stream"),
        ({"agent": "support-chat", "prompt": "hi", "threadId": 12}, "threadId"),
        ({"agent": "support-chat", "prompt": "hi", "threadId": "a/b"}, "threadId"),
        ({"agent": "support-chat", "prompt": "hi", "config": []}, "config"),
        ({"agent": "support-chat", "prompt": "hi", "config": {"maxTokens": 0}}, "config.maxTokens"),
        (
            {"agent": "support-chat", "prompt": "hi", "config": {"maxTokens": 128001}},
            "config.maxTokens",
        ),
        (
            {"agent": "support-chat", "prompt": "hi", "config": {"maxTokens": "9"}},
            "config.maxTokens",
        ),
        (
            {"agent": "support-chat", "prompt": "hi", "config": {"maxTokens": True}},
            "config.maxTokens",
        ),
        ({"agent": "support-chat", "prompt": "hi", "config": {"maxTurns": 0}}, "config.maxTurns"),
        ({"agent": "support-chat", "prompt": "hi", "config": {"maxTurns": 1.5}}, "config.maxTurns"),
        (
            {"agent": "support-chat", "prompt": "hi", "config": {"temperature": 2.5}},
            "config.temperature",
        ),
        (
            {"agent": "support-chat", "prompt": "hi", "config": {"temperature": -0.1}},
            "config.temperature",
        ),
        (
            {"agent": "support-chat", "prompt": "hi", "config": {"temperature": "hot"}},
            "config.temperature",
        ),
        ({"agent": "support-chat", "prompt": "hi", "metadata": "x"}, "metadata"),
        ({"agent": "ghost", "prompt": "hi", "config": {"maxTokens": 0}}, "config.maxTokens"),
    ],
)
def test_it_rejects_invalid_run_bodies(
    api: httpx.Client, body: dict[str, Any], mentions: str
) -> None:
    assert_error(run(api, **body), 400, "bad_request", mentions)


# --- POST /v1/run, SSE --------------------------------------------------------------------------


def test_support_chat_streams_deltas(api: httpx.Client) -> None:
    response, stream = run_stream(api, agent="support-chat", prompt=SUPPORT_PROMPT)
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert names(stream) == [
        "run_started",
        *["assistant_message_delta"] * 10,
        "assistant_message",
        "run_completed",
    ]
    # Every frame names itself on an `event:` line (a frame without one would read as "message").
    assert all(block.startswith("event: ") for block in response.text.split("\n\n") if block)
    for frame in stream.frames:
        assert frame.json["type"] == frame.event
    started, *deltas, message, completed = (frame.json for frame in stream.frames)
    run_id, thread_id = response.headers["x-run-id"], response.headers["x-thread-id"]
    assert started == {
        "type": "run_started",
        "runId": run_id,
        "threadId": thread_id,
        "executionMode": "managed",
        "sandboxId": None,
    }
    assert [d["delta"] for d in deltas] == SUPPORT_DELTAS
    assert all(d["runId"] == run_id for d in deltas)
    assert message == {"type": "assistant_message", "role": "assistant", "content": SUPPORT_ANSWER}
    assert completed == {
        "type": "run_completed",
        "runId": run_id,
        "threadId": thread_id,
        "status": "completed",
        "result": SUPPORT_ANSWER,
        "usage": SUPPORT_USAGE,
        "iterations": 1,
    }
    assert stream.comments == []
    assert stream.leftover == ""


def test_stream_is_the_default(api: httpx.Client) -> None:
    response = api.post("/run", json={"agent": "support-chat", "prompt": "hi"})
    assert response.headers["content-type"] == "text/event-stream"
    explicit = api.post("/run", json={"agent": "support-chat", "prompt": "hi", "stream": True})
    assert explicit.headers["content-type"] == "text/event-stream"


def test_code_assistant_streams_tool_calls(api: httpx.Client) -> None:
    _, stream = run_stream(api, agent="code-assistant", prompt=CODE_PROMPT)
    assert squash(names(stream)) == [
        "run_started",
        "tool_call_started",
        "tool_output_delta*4",
        "tool_call_completed",
        "tool_call_started",
        "tool_output_delta*3",
        "tool_call_completed",
        "assistant_message_delta*15",
        "assistant_message",
        "run_completed",
    ]
    frames = [frame.json for frame in stream.frames]
    assert re.fullmatch(r"sandbox-[0-9a-f]{12}", frames[0]["sandboxId"])
    read_started, read_done = frames[1], frames[6]
    assert read_started == {
        "type": "tool_call_started",
        "toolCallId": read_started["toolCallId"],
        "tool": "read_file",
        "input": {"path": "README.md"},
    }
    assert "".join(f["delta"] for f in frames[2:6]) == README_OUTPUT
    assert read_done == {
        "type": "tool_call_completed",
        "toolCallId": read_started["toolCallId"],
        "output": README_OUTPUT,
        "isError": False,
    }
    tests_started, tests_done = frames[7], frames[11]
    assert tests_started["tool"] == "run_tests"
    assert tests_started["input"] == {"command": "pytest -q"}
    assert tests_done["output"] == TESTS_OUTPUT == "".join(f["delta"] for f in frames[8:11])
    assert tests_started["toolCallId"] != read_started["toolCallId"]
    assert "".join(f["delta"] for f in frames[12:27]) == CODE_ANSWER
    assert frames[-1]["iterations"] == 3
    assert frames[-1]["usage"] == {"inputTokens": 477, "outputTokens": 39, "totalTokens": 516}


def test_deep_thinker_thinks_before_answering(api: httpx.Client) -> None:
    _, stream = run_stream(api, agent="deep-thinker", prompt="Why is the sky blue?")
    assert squash(names(stream)) == [
        "run_started",
        "assistant_thinking_delta*11",
        "assistant_message_delta*9",
        "assistant_message",
        "run_completed",
    ]
    thinking = "".join(f.json["delta"] for f in stream.frames[1:12])
    assert thinking.startswith('The question is "Why is the sky blue". Let me split it')
    assert stream.frames[-1].json["usage"]["reasoningTokens"] == 42


def test_slow_poke_drips_forty_deltas_over_two_seconds(api: httpx.Client) -> None:
    started = time.monotonic()
    _, stream = run_stream(api, agent="slow-poke", prompt="Count to forty please")
    elapsed = time.monotonic() - started
    assert names(stream).count("assistant_message_delta") == 40
    assert all(len(f.json["delta"].split()) == 1 for f in stream.frames[1:41])
    assert stream.frames[0].json["executionMode"] == "in_sandbox"
    # 43 frames, 42 pauses of 50 ms.
    assert 1.9 < elapsed < 4


def test_json_and_stream_agree(api: httpx.Client) -> None:
    data = run_json(api, agent="code-assistant", prompt="Check src/app.ts please")
    _, stream = run_stream(api, agent="code-assistant", prompt="Check src/app.ts please")
    completed = stream.frames[-1].json
    assert (completed["result"], completed["usage"], completed["iterations"]) == (
        data["result"],
        data["usage"],
        data["iterations"],
    )


def test_the_legacy_path_streams(api: httpx.Client) -> None:
    response, stream = run_stream(api, "/agents/support-chat/run", prompt=SUPPORT_PROMPT)
    assert response.headers["x-thread-id"] == stream.frames[0].json["threadId"]
    assert stream.frames[-1].json["result"] == SUPPORT_ANSWER


# --- threads through runs ---------------------------------------------------------------------


def test_a_thread_remembers_its_turns(api: httpx.Client) -> None:
    first = run_json(api, agent="support-chat", prompt=SUPPORT_PROMPT)
    second = run_json(api, agent="support-chat", prompt=SUPPORT_PROMPT, threadId=first["threadId"])
    assert second["threadId"] == first["threadId"]
    assert second["result"] == SUPPORT_ANSWER + (
        " (Reply 2 in this thread; I kept the earlier turns in mind.)"
    )
    # One earlier turn: 96 history tokens, billed as input and reported as cached.
    assert second["usage"] == {
        "inputTokens": 285,
        "outputTokens": 44,
        "cachedInputTokens": 96,
        "totalTokens": 329,
    }
    events = thread_events(api, first["threadId"])
    assert [(e["sequence"], e["type"], e["runId"]) for e in events] == [
        (1, "user_message", first["runId"]),
        (2, "assistant_message", first["runId"]),
        (3, "user_message", second["runId"]),
        (4, "assistant_message", second["runId"]),
    ]
    assert events[1]["payload"] == {"role": "assistant", "content": SUPPORT_ANSWER}
    assert events[3]["payload"] == {"role": "assistant", "content": second["result"]}
    assert all(e["threadId"] == first["threadId"] for e in events)


def test_a_streamed_run_records_tool_events(api: httpx.Client) -> None:
    response, _ = run_stream(api, agent="code-assistant", prompt=CODE_PROMPT)
    events = thread_events(api, response.headers["x-thread-id"])
    assert [e["type"] for e in events] == [
        "user_message",
        "tool_call_started",
        "tool_call_completed",
        "tool_call_started",
        "tool_call_completed",
        "assistant_message",
    ]
    assert events[0]["payload"] == {"role": "user", "content": CODE_PROMPT}
    assert events[1]["payload"] == {
        "toolCallId": events[1]["payload"]["toolCallId"],
        "tool": "read_file",
        "input": {"path": "README.md"},
    }
    assert events[4]["payload"]["output"] == TESTS_OUTPUT
    assert events[4]["payload"]["isError"] is False
    assert events[5]["payload"] == {"role": "assistant", "content": CODE_ANSWER}
    assert all(e["runId"] == response.headers["x-run-id"] for e in events)


def test_a_thread_has_the_documented_shape(api: httpx.Client) -> None:
    prompt = "word " * 30
    data = run_json(api, agent="slow-poke", prompt=prompt)
    thread = api.get(f"/threads/{data['threadId']}").json()["data"]["thread"]
    assert set(thread) == {
        "id",
        "agentId",
        "title",
        "executionMode",
        "archived",
        "createdAt",
        "updatedAt",
    }
    assert thread["title"] == ("word " * 16)[:79] + "…"
    assert len(thread["title"]) == 80
    assert thread["agentId"] == api.get("/agents/slow-poke").json()["data"]["id"]
    assert thread["executionMode"] == "in_sandbox"
    assert thread["archived"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", thread["updatedAt"])


def test_an_unknown_thread_id_is_adopted(api: httpx.Client) -> None:
    data = run_json(api, agent="support-chat", prompt="hello", threadId="thr_my_own_id")
    assert data["threadId"] == "thr_my_own_id"
    assert api.get("/threads/thr_my_own_id").json()["data"]["thread"]["title"] == "hello"


def test_another_agents_thread_is_a_conflict(api: httpx.Client) -> None:
    data = run_json(api, agent="support-chat", prompt="hello")
    response = run(api, agent="deep-thinker", prompt="hi", threadId=data["threadId"])
    assert_error(response, 409, "conflict", "support-chat")


def test_a_stream_the_client_drops_records_no_answer(api: httpx.Client) -> None:
    # 43 frames 10 ms apart: the whole run would be over in about 0.45 s.
    body = {"agent": "slow-poke", "prompt": "Count to forty please", **simulate(dripMs=10)}
    with api.stream("POST", "/run", json=body) as response:
        thread_id = response.headers["x-thread-id"]
        for chunk in response.iter_raw():
            if b"assistant_message_delta" in chunk:
                break
    time.sleep(1)  # well past the end the run would have reached had it gone on
    events = thread_events(api, thread_id)
    assert [e["type"] for e in events] == ["user_message"]
    # The same run left alone does record its answer.
    response, _ = run_stream(api, **body)
    types = [e["type"] for e in thread_events(api, response.headers["x-thread-id"])]
    assert types == ["user_message", "assistant_message"]


# --- agent-scoped thread helpers --------------------------------------------------------------


def test_agent_threads_are_listed_newest_first(fresh: httpx.Client) -> None:
    older = run_json(fresh, agent="support-chat", prompt="first")
    newer = run_json(fresh, agent="support-chat", prompt="second")
    run_json(fresh, agent="deep-thinker", prompt="elsewhere")
    listed = fresh.get("/run/threads", params={"agent": "support-chat"}).json()["data"]
    assert [t["id"] for t in listed] == [newer["threadId"], older["threadId"]]
    assert [t["title"] for t in listed] == ["second", "first"]
    # Continuing the older thread makes it the newest.
    run_json(fresh, agent="support-chat", prompt="again", threadId=older["threadId"])
    listed = fresh.get("/run/threads", params={"agent": "support-chat"}).json()["data"]
    assert [t["id"] for t in listed] == [older["threadId"], newer["threadId"]]


def test_agent_thread_helpers_need_a_known_agent(fresh: httpx.Client) -> None:
    data = run_json(fresh, agent="support-chat", prompt="hello")
    thread_path = f"/run/threads/{data['threadId']}"
    for method in ("GET", "DELETE"):
        assert_error(fresh.request(method, thread_path), 400, "bad_request", "agent")
        response = fresh.request(method, thread_path, params={"agent": "ghost"})
        assert_error(response, 404, "not_found", "ghost")
        response = fresh.request(method, thread_path, params={"agent": "deep-thinker"})
        assert_error(response, 404, "not_found")
    assert_error(fresh.get("/run/threads"), 400, "bad_request", "agent")
    assert_error(fresh.get("/run/threads", params={"agent": "ghost"}), 404, "not_found")


def test_an_agent_thread_can_be_read_and_deleted(fresh: httpx.Client) -> None:
    data = run_json(fresh, agent="support-chat", prompt="hello")
    path, params = f"/run/threads/{data['threadId']}", {"agent": "support-chat"}
    detail = fresh.get(path, params=params).json()["data"]
    assert detail["thread"]["id"] == data["threadId"]
    assert [e["type"] for e in detail["events"]] == ["user_message", "assistant_message"]
    response = fresh.delete(path, params=params)
    assert response.status_code == 200
    assert response.json()["data"] == {"id": data["threadId"], "deleted": True}
    assert_error(fresh.get(path, params=params), 404, "not_found")
    assert_error(fresh.delete(path, params=params), 404, "not_found")
    assert fresh.get("/run/threads", params=params).json()["data"] == []


def test_keys_never_see_each_others_threads(sim: SimulatorServer) -> None:
    with _client(sim, next(_spare)) as alice, _client(sim, next(_spare)) as bob:
        data = run_json(alice, agent="support-chat", prompt="private")
        thread_id = data["threadId"]
        assert_error(bob.get(f"/threads/{thread_id}"), 404, "not_found")
        assert_error(bob.get(f"/threads/{thread_id}/events"), 404, "not_found")
        assert_error(bob.patch(f"/threads/{thread_id}", json={"title": "x"}), 404, "not_found")
        assert_error(bob.delete(f"/threads/{thread_id}"), 404, "not_found")
        params = {"agent": "support-chat"}
        assert_error(bob.get(f"/run/threads/{thread_id}", params=params), 404, "not_found")
        assert bob.get("/threads").json()["data"] == []
        assert bob.get("/run/threads", params=params).json()["data"] == []
        # Bob continuing "the same" id gets a thread of his own; Alice's is untouched.
        run_json(bob, agent="support-chat", prompt="mine", threadId=thread_id)
        assert alice.get(f"/threads/{thread_id}").json()["data"]["thread"]["title"] == "private"
        assert len(thread_events(alice, thread_id)) == 2


# --- canonical thread API ---------------------------------------------------------------------


def test_threads_are_paged_with_paging_in_meta(fresh: httpx.Client) -> None:
    ids = [run_json(fresh, agent="support-chat", prompt=f"t{i}")["threadId"] for i in range(5)]
    first = fresh.get("/threads", params={"limit": 2}).json()
    assert [t["id"] for t in first["data"]] == [ids[4], ids[3]]
    assert first["meta"]["hasMore"] is True
    assert "hasMore" not in first
    second = fresh.get(
        "/threads", params={"limit": 2, "cursor": first["meta"]["nextCursor"]}
    ).json()
    assert [t["id"] for t in second["data"]] == [ids[2], ids[1]]
    third = fresh.get(
        "/threads", params={"limit": 2, "cursor": second["meta"]["nextCursor"]}
    ).json()
    assert [t["id"] for t in third["data"]] == [ids[0]]
    assert third["meta"]["hasMore"] is False
    assert third["meta"]["nextCursor"] is None
    everything = fresh.get("/threads").json()
    assert [t["id"] for t in everything["data"]] == ids[::-1]
    assert everything["meta"]["hasMore"] is False


def test_the_default_thread_page_is_fifty(fresh: httpx.Client) -> None:
    for i in range(51):
        run_json(fresh, agent="support-chat", prompt=f"t{i}")
    page = fresh.get("/threads").json()
    assert len(page["data"]) == 50
    assert page["meta"]["hasMore"] is True
    assert len(fresh.get("/threads", params={"limit": 100}).json()["data"]) == 51


@pytest.mark.parametrize(
    ("params", "mentions"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"archived": "maybe"}, "archived"),
    ],
)
def test_thread_list_rejects_bad_parameters(
    api: httpx.Client, params: dict[str, Any], mentions: str
) -> None:
    assert_error(api.get("/threads", params=params), 400, "bad_request", mentions)


def test_archived_threads_are_listed_apart(fresh: httpx.Client) -> None:
    kept = run_json(fresh, agent="support-chat", prompt="keep")["threadId"]
    gone = run_json(fresh, agent="support-chat", prompt="archive me")["threadId"]
    response = fresh.patch(f"/threads/{gone}", json={"archived": True})
    assert response.status_code == 200
    assert response.json()["data"]["archived"] is True
    assert [t["id"] for t in fresh.get("/threads").json()["data"]] == [kept]
    archived = fresh.get("/threads", params={"archived": "true"}).json()["data"]
    assert [t["id"] for t in archived] == [gone]
    active = fresh.get("/threads", params={"archived": "false"}).json()["data"]
    assert [t["id"] for t in active] == [kept]


def test_a_thread_can_be_renamed(api: httpx.Client) -> None:
    data = run_json(api, agent="support-chat", prompt="hello")
    path = f"/threads/{data['threadId']}"
    before = api.get(path).json()["data"]["thread"]
    response = api.patch(path, json={"title": "Renamed"})
    assert response.status_code == 200
    thread = response.json()["data"]
    assert thread["title"] == "Renamed"
    assert thread["archived"] is False
    assert thread["updatedAt"] >= before["updatedAt"]
    assert api.get(path).json()["data"]["thread"]["title"] == "Renamed"
    unchanged = api.patch(path, json={}).json()["data"]
    assert (unchanged["title"], unchanged["archived"]) == ("Renamed", False)


@pytest.mark.parametrize(
    ("body", "mentions"),
    [({"title": 5}, "title"), ({"title": ""}, "title"), ({"archived": "yes"}, "archived")],
)
def test_patch_rejects_wrong_types(api: httpx.Client, body: dict[str, Any], mentions: str) -> None:
    data = run_json(api, agent="support-chat", prompt="hello")
    response = api.patch(f"/threads/{data['threadId']}", json=body)
    assert_error(response, 400, "bad_request", mentions)
    assert_error(api.patch(f"/threads/{data['threadId']}", content=b"[]"), 400, "bad_request")


def test_a_thread_can_be_deleted(api: httpx.Client) -> None:
    data = run_json(api, agent="support-chat", prompt="hello")
    response = api.delete(f"/threads/{data['threadId']}")
    assert response.status_code == 204
    assert response.content == b""
    assert_error(api.get(f"/threads/{data['threadId']}"), 404, "not_found")
    assert_error(api.delete(f"/threads/{data['threadId']}"), 404, "not_found")


def test_unknown_threads_are_404(api: httpx.Client) -> None:
    for method, path in [
        ("GET", "/threads/thr_missing"),
        ("GET", "/threads/thr_missing/events"),
        ("PATCH", "/threads/thr_missing"),
        ("DELETE", "/threads/thr_missing"),
    ]:
        response = api.request(method, path, json={"title": "x"} if method == "PATCH" else None)
        assert_error(response, 404, "not_found", "thr_missing")


def test_events_are_paged_with_paging_at_the_top_level(api: httpx.Client) -> None:
    thread_id = run_json(api, agent="support-chat", prompt="one")["threadId"]
    for prompt in ("two", "three"):
        run_json(api, agent="support-chat", prompt=prompt, threadId=thread_id)
    page = api.get(f"/threads/{thread_id}/events", params={"limit": 4}).json()
    assert [e["sequence"] for e in page["data"]] == [1, 2, 3, 4]
    assert page["hasMore"] is True
    assert set(page["meta"]) == {"requestId"}
    rest = api.get(
        f"/threads/{thread_id}/events", params={"limit": 4, "cursor": page["nextCursor"]}
    ).json()
    assert [e["sequence"] for e in rest["data"]] == [5, 6]
    assert rest["hasMore"] is False
    assert rest["nextCursor"] is None
    assert rest["data"][0]["payload"] == {"role": "user", "content": "three"}
    everything = api.get(f"/threads/{thread_id}/events").json()
    assert len(everything["data"]) == 6
    assert everything["hasMore"] is False


@pytest.mark.parametrize("params", [{"limit": 501}, {"limit": 0}, {"cursor": "zzz"}])
def test_events_reject_bad_parameters(api: httpx.Client, params: dict[str, Any]) -> None:
    thread_id = run_json(api, agent="support-chat", prompt="one")["threadId"]
    response = api.get(f"/threads/{thread_id}/events", params=params)
    assert_error(response, 400, "bad_request")
    assert len(api.get(f"/threads/{thread_id}/events", params={"limit": 500}).json()["data"]) == 2


# --- faults: errors before the stream ---------------------------------------------------------

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    429: "rate_limited",
    500: "internal_error",
    502: "provider_error",
    503: "unavailable",
}


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(("status", "code"), STATUS_CODES.items())
def test_simulated_statuses(fresh: httpx.Client, status: int, code: str, stream: bool) -> None:
    response = run(
        fresh, agent="support-chat", prompt="hi", stream=stream, **simulate(status=status)
    )
    assert_error(response, status, code, "metadata.simulate.status")
    assert response.headers["content-type"] == "application/json"
    # A run refused before it started leaves no thread behind.
    assert fresh.get("/threads").json()["data"] == []


def test_a_simulated_429_says_when_to_retry(api: httpx.Client) -> None:
    response = run(api, agent="support-chat", prompt="hi", **simulate(status=429))
    assert response.headers["retry-after"] == "2"
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["x-ratelimit-limit"] == "60"
    assert 0 < int(response.headers["x-ratelimit-reset"]) - time.time() <= 3
    response = run(api, agent="support-chat", prompt="hi", **simulate(status=429, retryAfter=7))
    assert response.headers["retry-after"] == "7"


def test_faults_apply_on_the_legacy_path(api: httpx.Client) -> None:
    response = api.post("/agents/deep-thinker/run", json={"prompt": "hi", **simulate(status=502)})
    assert_error(response, 502, "provider_error")
    _, stream = run_stream(api, "/agents/deep-thinker/run", prompt="hi", **simulate(cutAfter=2))
    assert names(stream) == ["run_started", "assistant_thinking_delta"]


@pytest.mark.parametrize("stream", [True, False])
def test_hang_delays_the_first_byte(api: httpx.Client, stream: bool) -> None:
    started = time.monotonic()
    response = run(
        api, agent="support-chat", prompt="hi", stream=stream, **simulate(hangSeconds=0.4)
    )
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.4


def test_a_hang_times_out_before_any_header(sim: SimulatorServer) -> None:
    body = {"agent": "support-chat", "prompt": "hi", **simulate(hangSeconds=30)}
    with (
        httpx.Client(base_url=sim.url, headers={"X-API-Key": DEMO}, timeout=0.3) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.post("/run", json=body)


def test_a_client_that_gives_up_ends_the_hang(sim: SimulatorServer, api: httpx.Client) -> None:
    body = {"agent": "support-chat", "prompt": "hi", "threadId": "thr_abandoned"}
    body |= simulate(hangSeconds=0.6)
    with (
        httpx.Client(base_url=sim.url, headers={"X-API-Key": DEMO}, timeout=0.1) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.post("/run", json=body)
    time.sleep(1)  # past the hang: had the run gone ahead, it would have made the thread
    assert_error(api.get("/threads/thr_abandoned"), 404, "not_found")
    # Waited out, the same request does make it.
    assert run(api, **body).status_code == 200
    assert api.get("/threads/thr_abandoned").status_code == 200


def test_a_hang_then_a_status(api: httpx.Client) -> None:
    started = time.monotonic()
    response = run(api, agent="support-chat", prompt="hi", **simulate(hangSeconds=0.2, status=500))
    assert_error(response, 500, "internal_error")
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(
    ("faults", "mentions"),
    [
        ("nope", "metadata.simulate"),
        ({"status": 418}, "metadata.simulate.status"),
        ({"status": "500"}, "metadata.simulate.status"),
        ({"hangSeconds": -1}, "metadata.simulate.hangSeconds"),
        ({"hangSeconds": "1"}, "metadata.simulate.hangSeconds"),
        ({"dripMs": True}, "metadata.simulate.dripMs"),
        ({"deltas": 0}, "metadata.simulate.deltas"),
        ({"deltas": 100001}, "metadata.simulate.deltas"),
        ({"deltas": 2.5}, "metadata.simulate.deltas"),
        ({"cutAfter": -1}, "metadata.simulate.cutAfter"),
        ({"errorAfter": "3"}, "metadata.simulate.errorAfter"),
        ({"keepAlive": 1}, "metadata.simulate.keepAlive"),
        ({"unknownFrames": "yes"}, "metadata.simulate.unknownFrames"),
        # null counts as absent; 0 is not a boolean.
        ({"noEventLine": None, "multilineData": 0}, "metadata.simulate.multilineData"),
        ({"nonJsonFrame": []}, "metadata.simulate.nonJsonFrame"),
        ({"done": "true"}, "metadata.simulate.done"),
        ({"runStatus": "finished"}, "metadata.simulate.runStatus"),
        ({"omitUsageFields": "outputTokens"}, "metadata.simulate.omitUsageFields"),
        ({"omitUsageFields": [1]}, "metadata.simulate.omitUsageFields"),
        ({"retryAfter": -5}, "metadata.simulate.retryAfter"),
    ],
)
def test_bad_simulate_options_are_400(api: httpx.Client, faults: Any, mentions: str) -> None:
    response = run(api, agent="support-chat", prompt="hi", metadata={"simulate": faults})
    assert_error(response, 400, "bad_request", mentions)


def test_unknown_simulate_keys_are_ignored(api: httpx.Client) -> None:
    data = run_json(
        api,
        agent="support-chat",
        prompt=SUPPORT_PROMPT,
        metadata={"simulate": {"somethingNew": 1}, "caller": "kept"},
    )
    assert data["result"] == SUPPORT_ANSWER


# --- faults: stream shape ---------------------------------------------------------------------


def test_drip_spaces_the_frames(api: httpx.Client) -> None:
    body = {"agent": "support-chat", "prompt": SUPPORT_PROMPT, **simulate(dripMs=25)}
    arrivals = []
    # Timed from the request, not from the first read: on a busy machine the first read can
    # already hold two frames, and then first-to-last read spans only eleven pauses.
    started = time.monotonic()
    with api.stream("POST", "/run", json=body) as response:
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic(), chunk.count(b"\n\n")))
    # 13 frames, 12 pauses: they cannot all have come in one read.
    assert sum(count for _, count in arrivals) == 13
    assert arrivals[-1][0] - started >= 12 * 0.025 * 0.9
    assert len(arrivals) >= 6


def test_drip_zero_makes_slow_poke_fast(api: httpx.Client) -> None:
    started = time.monotonic()
    _, stream = run_stream(api, agent="slow-poke", prompt="hurry", **simulate(dripMs=0))
    # Well under the two seconds its own 50 ms pace would take.
    assert time.monotonic() - started < 1.5
    assert names(stream).count("assistant_message_delta") == 40


@pytest.mark.parametrize("count", [1, 3, 10, 500])
def test_deltas_sets_the_exact_delta_count(api: httpx.Client, count: int) -> None:
    _, stream = run_stream(
        api, agent="support-chat", prompt=SUPPORT_PROMPT, **simulate(deltas=count)
    )
    deltas = [f.json["delta"] for f in stream.frames if f.event == "assistant_message_delta"]
    assert len(deltas) == count
    completed = stream.frames[-1].json
    assert "".join(deltas) == completed["result"] == stream.frames[-2].json["content"]
    if count <= 19:  # the answer has 19 words: fewer deltas regroup them, more cycle them
        assert completed["result"] == SUPPORT_ANSWER
    else:
        assert completed["result"].startswith(SUPPORT_ANSWER + " Thanks for reaching out")
    assert completed["usage"]["outputTokens"] == -(-len(completed["result"]) // 4)


def test_a_hundred_thousand_deltas_stream_whole(api: httpx.Client) -> None:
    # How fast is bench/simulator.py's business; here, only that nothing is lost or cut.
    body = {"agent": "support-chat", "prompt": "go", **simulate(deltas=100_000)}
    response = api.post("/run", json=body)
    stream = parse_sse(response.text)
    assert names(stream).count("assistant_message_delta") == 100_000
    assert stream.frames[-1].event == "run_completed"


def test_max_tokens_can_cut_a_delta_count_short(api: httpx.Client) -> None:
    _, stream = run_stream(
        api,
        agent="support-chat",
        prompt=SUPPORT_PROMPT,
        config={"maxTokens": 3},
        **simulate(deltas=10),
    )
    deltas = [f.json["delta"] for f in stream.frames if f.event == "assistant_message_delta"]
    assert deltas == ["Thanks for ", "r"]
    assert stream.frames[-1].json["usage"]["outputTokens"] == 3


@pytest.mark.parametrize("count", [0, 1, 5])
def test_cut_after_ends_the_stream_without_a_final_frame(fresh: httpx.Client, count: int) -> None:
    response, stream = run_stream(
        fresh, agent="code-assistant", prompt=CODE_PROMPT, **simulate(cutAfter=count)
    )
    assert len(stream.frames) == count
    assert stream.leftover == ""
    expected = ["run_started", "tool_call_started", "tool_output_delta", "tool_output_delta"]
    assert names(stream) == [*expected, "tool_output_delta"][:count]
    # The run never finished: the thread has the prompt, the events that went out, no answer.
    events = thread_events(fresh, response.headers["x-thread-id"])
    went_out = ["tool_call_started"] if count >= 2 else []
    assert [e["type"] for e in events] == ["user_message", *went_out]


def test_cut_after_past_the_end_still_drops_run_completed(api: httpx.Client) -> None:
    _, stream = run_stream(
        api, agent="support-chat", prompt=SUPPORT_PROMPT, **simulate(cutAfter=999)
    )
    assert names(stream) == ["run_started", *["assistant_message_delta"] * 10, "assistant_message"]


def test_error_after_sends_an_error_frame(api: httpx.Client) -> None:
    _, stream = run_stream(
        api, agent="support-chat", prompt=SUPPORT_PROMPT, **simulate(errorAfter=3)
    )
    assert names(stream) == [
        "run_started",
        "assistant_message_delta",
        "assistant_message_delta",
        "error",
    ]
    assert stream.frames[-1].json == {
        "type": "error",
        "error": {
            "code": "provider_error",
            "message": "simulated provider failure after 3 frames (metadata.simulate.errorAfter)",
        },
    }


def test_the_earlier_of_cut_and_error_wins(api: httpx.Client) -> None:
    _, stream = run_stream(
        api, agent="support-chat", prompt="hi", **simulate(errorAfter=4, cutAfter=2)
    )
    assert names(stream) == ["run_started", "assistant_message_delta"]
    _, stream = run_stream(
        api, agent="support-chat", prompt="hi", **simulate(errorAfter=1, cutAfter=2)
    )
    assert names(stream) == ["run_started", "error"]


def test_keep_alive_sends_pings_between_frames(api: httpx.Client) -> None:
    response, stream = run_stream(
        api, agent="support-chat", prompt=SUPPORT_PROMPT, **simulate(keepAlive=True)
    )
    assert response.text.startswith(": ping\n\n")
    assert stream.comments == ["ping"] * 13
    assert names(stream)[-1] == "run_completed"
    assert stream.frames[-1].json["result"] == SUPPORT_ANSWER


def test_unknown_frames_are_interleaved(api: httpx.Client) -> None:
    _, stream = run_stream(
        api, agent="code-assistant", prompt=CODE_PROMPT, **simulate(unknownFrames=True)
    )
    frame_names = names(stream)
    assert frame_names[:2] == ["run_started", "sandbox_status"]
    metric = frame_names.index("x_custom_metric")
    assert frame_names[metric - 1] == frame_names[metric + 1] == "assistant_message_delta"
    for frame in stream.frames:
        assert frame.json["type"] == frame.event
    assert stream.frames[1].json == {
        "type": "sandbox_status",
        "sandboxId": stream.frames[0].json["sandboxId"],
        "status": "ready",
    }
    assert stream.frames[-1].json["result"] == CODE_ANSWER


def test_frames_without_an_event_line(api: httpx.Client) -> None:
    response, stream = run_stream(
        api, agent="support-chat", prompt=SUPPORT_PROMPT, **simulate(noEventLine=True)
    )
    assert "event:" not in response.text
    assert set(names(stream)) == {"message"}
    assert [f.json["type"] for f in stream.frames] == [
        "run_started",
        *["assistant_message_delta"] * 10,
        "assistant_message",
        "run_completed",
    ]


def test_multiline_data_parses_to_the_same_json(api: httpx.Client) -> None:
    _, plain = run_stream(api, agent="code-assistant", prompt=CODE_PROMPT)
    response, multi = run_stream(
        api, agent="code-assistant", prompt=CODE_PROMPT, **simulate(multilineData=True)
    )
    assert names(multi) == names(plain)
    assert all("\n" in frame.data for frame in multi.frames)
    assert response.text.count("data: ") > 3 * len(multi.frames)

    def without_ids(value: Any) -> Any:
        text = re.sub(r"(run|thr|sandbox-|call)_?[0-9a-f]{8,16}(_\d)?", "ID", json.dumps(value))
        return json.loads(text)

    assert [without_ids(f.json) for f in multi.frames] == [
        without_ids(f.json) for f in plain.frames
    ]


def test_a_non_json_frame(api: httpx.Client) -> None:
    _, stream = run_stream(
        api, agent="support-chat", prompt=SUPPORT_PROMPT, **simulate(nonJsonFrame=True)
    )
    notes = [f for f in stream.frames if f.event == "note"]
    assert [f.data for f in notes] == ["hello, plain text"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(notes[0].data)
    assert names(stream)[:2] == ["run_started", "note"]


def test_done_ends_the_stream(api: httpx.Client) -> None:
    response, stream = run_stream(
        api, agent="support-chat", prompt=SUPPORT_PROMPT, **simulate(done=True)
    )
    assert names(stream)[-2:] == ["run_completed", "message"]
    assert stream.frames[-1].data == "[DONE]"
    assert response.text.endswith("\n\ndata: [DONE]\n\n")
    _, cut = run_stream(api, agent="support-chat", prompt="hi", **simulate(done=True, cutAfter=2))
    assert "[DONE]" not in [f.data for f in cut.frames]


def test_every_stream_fault_at_once_still_parses(api: httpx.Client) -> None:
    faults = simulate(
        keepAlive=True,
        unknownFrames=True,
        noEventLine=True,
        multilineData=True,
        nonJsonFrame=True,
        done=True,
    )
    _, stream = run_stream(api, agent="deep-thinker", prompt="Why is the sky blue?", **faults)
    typed = [
        json.loads(f.data)["type"]
        for f in stream.frames
        if f.data not in ("[DONE]", "hello, plain text")
    ]
    assert typed[:3] == ["run_started", "sandbox_status", "assistant_thinking_delta"]
    assert typed[-1] == "run_completed"
    assert "x_custom_metric" in typed
    assert len(stream.comments) == len(stream.frames)


@pytest.mark.parametrize("run_status", ["registered", "dispatched"])
def test_a_run_that_is_not_finished_in_json(api: httpx.Client, run_status: str) -> None:
    data = run_json(
        api, agent="support-chat", prompt=SUPPORT_PROMPT, **simulate(runStatus=run_status)
    )
    assert data["status"] == run_status
    assert data["result"] is None
    assert data["usage"] == {"inputTokens": 189}
    # The answer "arrives later in the thread".
    events = thread_events(api, data["threadId"])
    assert events[-1]["payload"] == {"role": "assistant", "content": SUPPORT_ANSWER}


def test_a_run_that_is_not_finished_in_a_stream(api: httpx.Client) -> None:
    _, stream = run_stream(
        api, agent="code-assistant", prompt=CODE_PROMPT, **simulate(runStatus="dispatched")
    )
    assert names(stream) == ["run_started", "run_completed"]
    completed = stream.frames[-1].json
    assert (completed["status"], completed["result"]) == ("dispatched", None)
    assert completed["usage"] == {"inputTokens": 477}


@pytest.mark.parametrize("stream", [True, False])
def test_omit_usage_fields(api: httpx.Client, stream: bool) -> None:
    body = {"agent": "support-chat", "prompt": SUPPORT_PROMPT, "stream": stream}
    body |= simulate(omitUsageFields=["outputTokens", "totalTokens", "noSuchField"])
    response = api.post("/run", json=body)
    usage = (
        parse_sse(response.text).frames[-1].json["usage"]
        if stream
        else response.json()["data"]["usage"]
    )
    assert usage == {"inputTokens": 189}


def test_stamp_frames_says_when_each_dripped_frame_left(api: httpx.Client) -> None:
    before = time.time()
    _, stream = run_stream(
        api, agent="support-chat", prompt="hi", **simulate(dripMs=1, stampFrames=True)
    )
    after = time.time()
    stamps = [json.loads(frame.data)["sentAt"] for frame in stream.frames]
    assert len(stamps) > 3
    assert stamps == sorted(stamps)
    assert before <= stamps[0] and stamps[-1] <= after
