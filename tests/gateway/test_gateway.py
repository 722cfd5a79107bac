"""The drop-in gateway: every request goes through rtdash to the real simulator."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from runs.gateway.views import settle
from runs.models import DailyUsage, Run, RunEvent, Thread
from tests.conftest import ACME_KEY
from tests.helpers import stream_body
from tests.streams import frames, normalise_ids, payloads

pytestmark = pytest.mark.django_db(transaction=True)

SEED_EXAMPLE = {
    "agent": "code-assistant",
    "prompt": "Run the tests and summarize failures.",
    "stream": False,
    "config": {"maxTurns": 12},
}


async def direct(upstream, method: str, path: str, body=None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=upstream.url, timeout=30) as client:
        return await client.request(method, path, json=body, headers={"X-API-Key": ACME_KEY})


def latest_run() -> Run:
    return Run.objects.order_by("-pk").first()


async def finished_run() -> Run:
    """The latest run once recorded: its record is completed just after the response."""
    await settle()
    return await sync_to_async(latest_run)()


# --- JSON mode --------------------------------------------------------------------------


async def test_the_seed_example_works_verbatim(gateway, upstream):
    response = await gateway("POST", "/v1/run", SEED_EXAMPLE)
    expected = await direct(upstream, "POST", "/run", SEED_EXAMPLE)
    assert response.status_code == 200
    assert normalise_ids(response.content) == normalise_ids(expected.content)
    data = response.json()["data"]
    assert data["status"] == "completed"

    run = await finished_run()
    assert response["X-Rtdash-Run-Id"] == str(run.pk)
    assert run.source == "gateway"
    assert run.status == "completed"
    assert run.agent == "code-assistant"
    assert run.prompt == SEED_EXAMPLE["prompt"]
    assert run.config == {"maxTurns": 12}
    assert run.stream is False
    assert run.upstream_run_id == data["runId"]
    assert run.upstream_thread_id == data["threadId"]
    assert run.sandbox_id == data["sandboxId"]
    assert run.execution_mode == "in_sandbox"
    assert run.result == data["result"]
    assert run.input_tokens == data["usage"]["inputTokens"]
    assert run.output_tokens == data["usage"]["outputTokens"]
    assert run.iterations == data["iterations"]
    assert run.http_status == 200
    assert run.finished_at is not None and run.duration_ms is not None
    assert run.upstream_ms is not None and run.overhead_ms is not None


async def test_it_records_the_thread_and_continues_it(gateway):
    first = await gateway("POST", "/v1/run", {**SEED_EXAMPLE, "agent": "support-chat"})
    thread_id = first.json()["data"]["threadId"]
    second = await gateway(
        "POST",
        "/v1/run",
        {"agent": "support-chat", "prompt": "And then?", "threadId": thread_id, "stream": False},
    )
    assert second.json()["data"]["threadId"] == thread_id

    thread = await Thread.objects.aget(upstream_id=thread_id)
    runs = [run async for run in Run.objects.filter(thread=thread).order_by("pk")]
    assert thread.turns == 2
    assert thread.title == SEED_EXAMPLE["prompt"]
    assert thread.agent == "support-chat"
    assert thread.input_tokens == sum(run.input_tokens for run in runs)
    assert thread.output_tokens == sum(run.output_tokens for run in runs)


async def test_missing_usage_fields_stay_empty_not_zero(gateway):
    body = {
        **SEED_EXAMPLE,
        "metadata": {"simulate": {"omitUsageFields": ["outputTokens", "totalTokens"]}},
    }
    response = await gateway("POST", "/v1/run", body)
    assert "outputTokens" not in response.json()["data"]["usage"]
    run = await finished_run()
    assert run.input_tokens is not None
    assert run.output_tokens is None
    assert run.total_tokens is None


async def test_it_records_deep_thinker_reasoning_tokens(gateway):
    response = await gateway(
        "POST", "/v1/run", {"agent": "deep-thinker", "prompt": "Why?", "stream": False}
    )
    usage = response.json()["data"]["usage"]
    run = await finished_run()
    assert run.reasoning_tokens == usage["reasoningTokens"] > 0


@pytest.mark.parametrize("run_status", ["registered", "dispatched"])
async def test_it_records_unfinished_upstream_statuses(gateway, run_status):
    body = {**SEED_EXAMPLE, "metadata": {"simulate": {"runStatus": run_status}}}
    response = await gateway("POST", "/v1/run", body)
    assert response.json()["data"]["status"] == run_status
    run = await finished_run()
    assert run.status == run_status


async def test_the_legacy_path_works_and_is_recorded(gateway, upstream):
    body = {"prompt": "Hello there", "stream": False}
    response = await gateway("POST", "/v1/agents/support-chat/run", body)
    expected = await direct(upstream, "POST", "/agents/support-chat/run", body)
    assert response.status_code == 200
    assert normalise_ids(response.content) == normalise_ids(expected.content)
    run = await finished_run()
    assert run.agent == "support-chat"
    assert run.legacy_path is True


async def test_it_updates_the_daily_rollup(gateway, acme):
    await gateway("POST", "/v1/run", SEED_EXAMPLE)
    await gateway("POST", "/v1/run", SEED_EXAMPLE)
    rows = [row async for row in DailyUsage.objects.filter(team=acme)]
    assert len(rows) == 1
    runs = [run async for run in Run.objects.filter(team=acme)]
    assert rows[0].runs == 2
    assert rows[0].completed == 2
    assert rows[0].input_tokens == sum(run.input_tokens for run in runs)
    assert rows[0].output_tokens == sum(run.output_tokens for run in runs)
    assert rows[0].day == timezone.now().date()


# --- Upstream errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "bad_request"),
        (401, "invalid_token"),
        (404, "not_found"),
        (429, "rate_limited"),
        (500, "internal_error"),
        (502, "provider_error"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_errors_pass_through_and_are_recorded(gateway, status, code, stream):
    body = {**SEED_EXAMPLE, "stream": stream, "metadata": {"simulate": {"status": status}}}
    response = await gateway("POST", "/v1/run", body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] in (code, "unauthorized")
    if status == 429:
        assert response["Retry-After"] == "2"
    run = await finished_run()
    assert run.status == "failed"
    assert run.http_status == status
    assert run.error_code == error["code"]
    assert run.error_message == error["message"]


async def test_an_unknown_agent_is_the_upstreams_404(gateway):
    response = await gateway("POST", "/v1/run", {**SEED_EXAMPLE, "agent": "no-such-agent"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    run = await finished_run()
    assert (run.status, run.error_code) == ("failed", "not_found")


async def test_an_unreachable_upstream_is_a_clear_502(gateway, settings):
    settings.RUNTOOLS_API_URL = "http://127.0.0.1:9/v1"
    response = await gateway("POST", "/v1/run", SEED_EXAMPLE)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"
    run = await finished_run()
    assert (run.status, run.error_code) == ("failed", "upstream_unreachable")
    assert run.overhead_ms is not None and run.overhead_ms > 0


async def test_a_hanging_upstream_times_out_and_is_recorded(gateway, settings):
    # A JSON run is silent until it ends: it may be as long as any run, not one read's wait.
    settings.RTDASH_UPSTREAM_READ_TIMEOUT = 0.5
    settings.RTDASH_MAX_RUN_SECONDS = 1
    body = {**SEED_EXAMPLE, "metadata": {"simulate": {"hangSeconds": 3}}}
    response = await gateway("POST", "/v1/run", body)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_timeout"
    assert error["message"] == "RunTools sent nothing for 1 s"
    run = await finished_run()
    assert (run.status, run.error_code) == ("failed", "upstream_timeout")


async def test_a_json_run_may_stay_silent_longer_than_one_read_s_wait(gateway, settings):
    settings.RTDASH_UPSTREAM_READ_TIMEOUT = 0.3
    body = {**SEED_EXAMPLE, "metadata": {"simulate": {"hangSeconds": 1}}}
    response = await gateway("POST", "/v1/run", body)
    assert response.status_code == 200
    assert (await finished_run()).status == "completed"


async def test_a_full_upstream_pool_is_rtdash_s_503_not_a_runtools_timeout(gateway, settings):
    settings.RTDASH_UPSTREAM_MAX_CONNECTIONS = 1
    settings.RTDASH_UPSTREAM_CONNECT_TIMEOUT = 0.3  # also how long a request waits for the pool
    hanging = {**SEED_EXAMPLE, "metadata": {"simulate": {"hangSeconds": 2}}}

    async def second_while_the_first_holds_the_connection():
        await asyncio.sleep(0.5)
        return await gateway("POST", "/v1/run", SEED_EXAMPLE)

    first, second = await asyncio.gather(
        gateway("POST", "/v1/run", hanging), second_while_the_first_holds_the_connection()
    )
    assert first.status_code == 200
    assert second.status_code == 503
    error = second.json()["error"]
    assert error["code"] == "upstream_pool_full"
    assert "RTDASH_UPSTREAM_MAX_CONNECTIONS" in error["message"]
    statuses = {run.error_code: run.status async for run in Run.objects.all()}
    assert statuses == {"": "completed", "upstream_pool_full": "failed"}


# --- Stream mode ------------------------------------------------------------------------


async def test_a_stream_passes_through_unchanged(gateway, upstream):
    body = {"agent": "code-assistant", "prompt": "Fix the flaky test in tests/test_io.py"}
    response = await gateway("POST", "/v1/run", body)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    raw = await stream_body(response)
    expected = await direct(upstream, "POST", "/run", body)
    assert normalise_ids(raw) == normalise_ids(expected.content)
    assert response["X-Run-ID"].startswith("run_")
    assert response["X-Thread-ID"].startswith("thr_")

    run = await finished_run()
    final = payloads(raw)[-1]
    assert final["type"] == "run_completed"
    assert run.status == "completed"
    assert run.upstream_run_id == response["X-Run-ID"]
    assert run.result == final["result"]
    assert run.input_tokens == final["usage"]["inputTokens"]
    assert run.output_tokens == final["usage"]["outputTokens"]
    assert run.iterations == final["iterations"]
    assert run.first_byte_at is not None
    # rtdash's own share (receipt to the send upstream) is recorded for streams too.
    assert run.overhead_ms is not None and run.overhead_ms > 0
    assert run.upstream_ms is not None
    stored = [
        (e.event, e.data) async for e in RunEvent.objects.filter(run=run).order_by("sequence")
    ]
    assert stored == frames(raw)
    assert run.frame_count == len(stored)


@pytest.mark.parametrize(
    "simulate",
    [
        {"keepAlive": True},
        {"unknownFrames": True},
        {"noEventLine": True},
        {"multilineData": True},
        {"nonJsonFrame": True},
        {"done": True},
        {"unknownFrames": True, "keepAlive": True, "multilineData": True, "done": True},
    ],
)
async def test_odd_frames_pass_through_untouched_and_the_run_completes(gateway, upstream, simulate):
    body = {"agent": "support-chat", "prompt": "Say hi", "metadata": {"simulate": simulate}}
    response = await gateway("POST", "/v1/run", body)
    raw = await stream_body(response)
    expected = await direct(upstream, "POST", "/run", body)
    assert normalise_ids(raw) == normalise_ids(expected.content)
    run = await finished_run()
    assert run.status == "completed"
    assert run.output_tokens is not None
    assert run.frame_count == len(frames(raw))


async def test_a_cut_stream_ends_with_an_error_frame_and_is_interrupted(gateway):
    body = {"agent": "support-chat", "prompt": "Say hi", "metadata": {"simulate": {"cutAfter": 3}}}
    response = await gateway("POST", "/v1/run", body)
    received = frames(await stream_body(response))
    assert len(received) == 4
    event, data = received[-1]
    assert event == "error"
    assert json.loads(data)["error"]["code"] == "upstream_disconnected"
    run = await finished_run()
    assert run.status == "interrupted"
    assert run.error_code == "upstream_disconnected"
    assert await RunEvent.objects.filter(run=run).acount() == 3


async def test_an_error_frame_fails_the_run_with_its_reason(gateway):
    body = {"agent": "support-chat", "prompt": "Hi", "metadata": {"simulate": {"errorAfter": 2}}}
    response = await gateway("POST", "/v1/run", body)
    received = frames(await stream_body(response))
    assert received[-1][0] == "error"
    run = await finished_run()
    assert run.status == "failed"
    assert run.error_code == json.loads(received[-1][1])["error"]["code"]


async def test_a_long_stream_is_relayed_and_stored_completely(gateway):
    body = {"agent": "support-chat", "prompt": "Count", "metadata": {"simulate": {"deltas": 5000}}}
    response = await gateway("POST", "/v1/run", body)
    received = frames(await stream_body(response))
    deltas = [f for f in received if f[0] == "assistant_message_delta"]
    assert len(deltas) == 5000
    run = await finished_run()
    assert run.status == "completed"
    assert await RunEvent.objects.filter(run=run).acount() == len(received)


# --- Validation (nothing is sent upstream) ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "hi"}, "agent"),
        ({"agent": "", "prompt": "hi"}, "agent"),
        ({"agent": 7, "prompt": "hi"}, "agent"),
        ({"agent": "support\x00chat", "prompt": "hi"}, "agent"),
        ({"agent": "support-chat", "prompt": "hi", "threadId": "thr_\n1"}, "threadId"),
        ({"agent": "support-chat"}, "prompt"),
        ({"agent": "support-chat", "prompt": 12}, "prompt"),
        ({"agent": "support-chat", "prompt": "  ", "messages": []}, "prompt"),
        ({"agent": "support-chat", "messages": "hi"}, "messages"),
        ({"agent": "support-chat", "messages": [{"content": "x"}]}, "messages[0].role"),
        (
            {"agent": "support-chat", "messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
        ),
        ({"agent": "support-chat", "prompt": "hi", "stream": "yes"}, "stream"),
        ({"agent": "support-chat", "prompt": "hi", "threadId": 5}, "threadId"),
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
        ({"agent": "support-chat", "prompt": "hi", "config": {"maxTurns": 0}}, "config.maxTurns"),
        (
            {"agent": "support-chat", "prompt": "hi", "config": {"temperature": 2.5}},
            "config.temperature",
        ),
        (
            {"agent": "support-chat", "prompt": "hi", "config": {"temperature": True}},
            "config.temperature",
        ),
        ({"agent": "support-chat", "prompt": "hi", "metadata": "x"}, "metadata"),
        ({"agent": "support-chat", "prompt": "hi", "metadata": {"k": "v" * 17000}}, "metadata"),
    ],
)
async def test_bad_bodies_are_400s_naming_the_field(gateway, body, field):
    response = await gateway("POST", "/v1/run", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert error["field"] == field
    assert field.split("[")[0].split(".")[-1] in error["message"]
    assert await Run.objects.acount() == 0


@pytest.mark.parametrize(
    ("body", "recorded"),
    [
        # null is as if left out: what other SDKs send for a setting they leave unset.
        ({"stream": None, "config": None, "metadata": None, "threadId": None}, {}),
        ({"config": {"maxTokens": None, "maxTurns": None, "temperature": None}}, {}),
        # A whole number written with a point (JavaScript cannot tell 1000.0 from 1000).
        (
            {"config": {"maxTokens": 1000.0, "maxTurns": 3.0}},
            {"config": {"maxTokens": 1000, "maxTurns": 3}},
        ),
        # RunTools states no upper bound for maxTurns.
        ({"config": {"maxTurns": 5000}}, {}),
        # An empty history beside a prompt.
        ({"messages": []}, {"messages": []}),
    ],
)
async def test_what_the_contract_allows_is_not_refused_and_goes_up_unchanged(
    gateway, upstream, body, recorded
):
    sent = {"agent": "support-chat", "prompt": "hi", "stream": False, **body}
    response = await gateway("POST", "/v1/run", raw=json.dumps(sent).encode())
    expected = await direct(upstream, "POST", "/run", sent)
    # Not rtdash's 400: RunTools' own answer, whatever it makes of the body (the simulator,
    # stricter than the contract, refuses a null stream and maxTokens 1000.0 itself).
    content = await stream_body(response) if response.streaming else response.content
    assert response.status_code == expected.status_code
    assert normalise_ids(content) == normalise_ids(expected.content)
    run = await finished_run()
    assert run is not None and run.http_status == expected.status_code
    assert run.prompt == "hi"
    for name, value in recorded.items():
        assert getattr(run, name) == value


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
async def test_non_object_bodies_are_400s(gateway, raw):
    response = await gateway("POST", "/v1/run", raw=raw)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "body"
    assert await Run.objects.acount() == 0


async def test_a_huge_body_is_413(gateway, settings):
    settings.RTDASH_MAX_BODY_BYTES = 4096
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    body = {"agent": "support-chat", "prompt": "x" * 5000}
    response = await gateway("POST", "/v1/run", body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert await Run.objects.acount() == 0


async def test_runtools_run_list_and_one_run_are_proxied_as_runtools_answers_them(
    gateway, upstream
):
    made = await gateway("POST", "/v1/run", SEED_EXAMPLE)
    run_id = made.json()["data"]["runId"]
    listed = await gateway("GET", "/v1/run?limit=5&status=completed")
    expected = await direct(upstream, "GET", "/run?limit=5&status=completed")
    assert listed.status_code == 200
    assert listed.json()["data"] == expected.json()["data"]
    assert run_id in [run["id"] for run in listed.json()["data"]]
    one = await gateway("GET", f"/v1/run/{run_id}")
    assert one.status_code == 200
    assert one.json()["data"]["id"] == run_id
    # RunTools' own answers: its 404 for an unknown run, its 400 for a bad filter.
    assert (await gateway("GET", "/v1/run/run_nope")).status_code == 404
    assert (await gateway("GET", "/v1/run?status=sleeping")).status_code == 400
    # Looking runs up records no run.
    assert await Run.objects.acount() == 1


async def test_it_rejects_other_methods_on_run(gateway):
    response = await gateway("DELETE", "/v1/run")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_nothing_else_is_proxied(gateway):
    response = await gateway("GET", "/v1/models/available")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_the_rollup_equals_a_rebuild_from_the_runs(gateway, acme):
    from runs.pipeline.recording import rebuild_usage

    await gateway("POST", "/v1/run", SEED_EXAMPLE)
    await gateway("POST", "/v1/run", {**SEED_EXAMPLE, "agent": "deep-thinker"})
    await gateway("POST", "/v1/run", {**SEED_EXAMPLE, "metadata": {"simulate": {"status": 500}}})
    stream = await gateway("POST", "/v1/run", {"agent": "support-chat", "prompt": "Hi"})
    await stream_body(stream)
    await settle()

    def snapshot():
        fields = ["day", "dimensions", "runs", "completed", "failed", "input_tokens"]
        fields += ["output_tokens", "cached_input_tokens", "reasoning_tokens", "unpriced_runs"]
        return sorted(DailyUsage.objects.filter(team=acme).values_list(*fields))

    incremental = await sync_to_async(snapshot)()
    counted = await sync_to_async(rebuild_usage)(acme)
    assert counted == 4
    assert await sync_to_async(snapshot)() == incremental
    assert sum(row[2] for row in incremental) == 4


async def test_nul_characters_are_forwarded_and_recorded_mended(gateway):
    """PostgreSQL refuses NUL in text: rtdash keeps its own copy storable, the run goes on."""
    body = {
        "agent": "support-chat",
        "prompt": "null\x00byte",
        "stream": False,
        "metadata": {"k\x00": ["v\x00"]},
    }
    response = await gateway("POST", "/v1/run", body)
    assert response.status_code == 200
    assert "null" in response.json()["data"]["result"]
    run = await finished_run()
    assert run.prompt == "null\ufffdbyte"
    assert run.metadata == {"k\ufffd": ["v\ufffd"]}
    assert run.status == "completed"
