"""POST /v1/run and the legacy per-agent path: validation, the frame plan, JSON and SSE."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

from .accounts import Account
from .agents import Agent, RunInput, Script, compose, find_agent
from .faults import Faults, parse_faults
from .records import OrgRecords, RunRecord
from .sse import PING, Encoder, Frame
from .store import KeyStore, Thread
from .web import (
    ApiError,
    Receive,
    Request,
    Response,
    Send,
    bad_request,
    new_id,
    not_found,
    ok,
)

MAX_TOKENS = 128_000
THREAD_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
# Without a drip, frames are written in batches of about this many bytes: one ASGI send per
# frame would make the simulator, not the proxy under test, the bottleneck of a benchmark.
BATCH_BYTES = 64 * 1024


@dataclass(frozen=True)
class RunRequest:
    agent: Agent
    prompt: str
    message_texts: tuple[str, ...]
    thread_id: str | None
    stream: bool
    max_tokens: int | None
    max_turns: int | None
    temperature: float | None
    faults: Faults


def _message_text(message: Any, index: int) -> tuple[str, str]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise bad_request(f"{where} must be an object")
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise bad_request(f"{where}.role must be a non-empty string")
    content = message.get("content")
    # Liberal: text may be in `content` (a string, or a list of parts) or in `parts`; an empty
    # content string next to text parts is common in SDK output, so parts win over "".
    parts = content if isinstance(content, list) else message.get("parts")
    if isinstance(content, str) and (content or parts is None):
        return role, content
    if content is not None and not isinstance(content, str | list):
        raise bad_request(f"{where}.content must be a string")
    if parts is None:
        raise bad_request(f"{where} needs content or parts")
    if not isinstance(parts, list):
        raise bad_request(f"{where}.parts must be a list of objects")
    texts = []
    for part in parts:
        if not isinstance(part, dict):
            raise bad_request(f"{where}.parts must be a list of objects")
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
    return role, "".join(texts)


def _config_int(config: dict[str, Any], key: str, low: int, high: int | None) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise bad_request(
            f"config.{key} must be an integer >= {low}" + (f" and <= {high}" if high else "")
        )
    if high is not None and value > high:
        raise bad_request(f"config.{key} must be an integer >= {low} and <= {high}")
    return value


def parse_run(body: dict[str, Any], agent_slug: str | None = None) -> RunRequest:
    """Validate a run body. `agent_slug` comes from the legacy path and replaces `agent`."""
    slug = agent_slug if agent_slug is not None else body.get("agent")
    if agent_slug is None and (not isinstance(slug, str) or not slug):
        raise bad_request("agent is required and must be a non-empty string")

    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise bad_request("prompt must be a string")
    messages = body.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise bad_request("messages must be a list of {role, content} objects")
    pairs = [_message_text(message, i) for i, message in enumerate(messages or [])]
    if prompt and prompt.strip():
        pairs.append(("user", prompt))
    user_texts = [text for role, text in pairs if role == "user"]
    if not pairs:
        raise bad_request("prompt or messages is required")
    if not user_texts or not user_texts[-1].strip():
        raise bad_request("the newest user message (prompt or messages) must have text")

    thread_id = body.get("threadId")
    if thread_id is not None and (
        not isinstance(thread_id, str) or not THREAD_ID_RE.match(thread_id)
    ):
        raise bad_request("threadId must be a string of 1-128 letters, digits or _.:-")
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise bad_request("stream must be a boolean")

    config = body.get("config")
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise bad_request("config must be an object")
    temperature = config.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise bad_request("config.temperature must be a number between 0 and 2")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad_request("metadata must be an object")

    faults = parse_faults(metadata)
    max_tokens = _config_int(config, "maxTokens", 1, MAX_TOKENS)
    max_turns = _config_int(config, "maxTurns", 1, None)
    # The agent is looked up last so a malformed body is a 400 whatever the agent.
    agent = find_agent(slug)
    if agent is None:
        raise not_found(f"agent {slug!r} not found")
    return RunRequest(
        agent=agent,
        prompt=user_texts[-1],
        message_texts=tuple(text for _, text in pairs),
        thread_id=thread_id,
        stream=stream,
        max_tokens=max_tokens,
        max_turns=max_turns,
        temperature=float(temperature) if temperature is not None else None,
        faults=faults,
    )


def simulated_error(faults: Faults) -> ApiError:
    assert faults.status is not None
    headers: list[tuple[str, str]] = []
    if faults.status == 429:
        reset = int(time.time()) + faults.retry_after
        headers = [
            ("retry-after", str(faults.retry_after)),
            ("x-ratelimit-limit", "60"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", str(reset)),
        ]
    message = f"simulated {faults.status} {faults.status_code} (metadata.simulate.status)"
    return ApiError(faults.status, message, headers=headers)


async def wait_for_disconnect(receive: Receive, seconds: float) -> bool:
    """Sleep up to `seconds`; True if the client hung up meanwhile (then nothing is sent)."""

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(watch(), seconds)
    except TimeoutError:
        return False
    return True


def final_usage(script: Script, faults: Faults) -> dict[str, int]:
    usage = dict(script.usage)
    if faults.run_status != "completed":
        # Not finished: only the input is known so far.
        usage = {"inputTokens": usage["inputTokens"]}
    for name in faults.omit_usage_fields:
        usage.pop(name, None)
    return usage


class Run:
    """One accepted run: its thread, its script and the events it records."""

    def __init__(
        self, request: RunRequest, keys: KeyStore, records: OrgRecords, account: Account
    ) -> None:
        self.request = request
        self.keys = keys
        self.records = records
        self.id = new_id("run_")
        self.thread = self._thread()
        self.script = compose(
            request.agent,
            RunInput(
                prompt=request.prompt,
                message_texts=request.message_texts,
                turns=self.thread.turns,
                max_tokens=request.max_tokens,
                max_turns=request.max_turns,
                deltas=request.faults.deltas,
            ),
        )
        self.record("user_message", {"role": "user", "content": request.prompt})
        self.run_record = RunRecord(
            id=self.id,
            key=account.key,
            user_id=account.user_id,
            agent=request.agent,
            thread_id=self.thread.id,
            sandbox_id=self.thread.sandbox_id,
            created_at=self.thread.events[-1].created_at,
            output=self.script.answer,
            usage=dict(self.script.usage),
            iterations=self.script.iterations,
            tools=tuple(call.tool for call in self.script.tool_calls),
            pending_lookups=None if self.finished else request.faults.pending_lookups,
        )
        records.start_run(self.run_record)

    def end(self, status: str) -> None:
        """The run's final status, for the runs list, activity and billing."""
        self.records.finish_run(self.run_record, status)

    def _thread(self) -> Thread:
        existing = self.keys.threads.get(self.request.thread_id or "")
        if existing is not None and existing.agent is not self.request.agent:
            raise ApiError(409, f"thread {existing.id} belongs to agent {existing.agent.slug!r}")
        return self.keys.open_thread(
            self.request.thread_id, self.request.agent, self.request.prompt
        )

    @property
    def finished(self) -> bool:
        return self.request.faults.run_status == "completed"

    def record(self, type_: str, payload: dict[str, Any]) -> None:
        self.keys.append(self.thread, self.id, type_, payload)

    def tool_frames(self) -> list[Frame]:
        """started, output deltas, completed for each tool call; started/completed are recorded."""
        frames = []
        for index, call in enumerate(self.script.tool_calls, start=1):
            call_id = f"call_{self.id[4:12]}_{index}"
            started = {"toolCallId": call_id, "tool": call.tool, "input": call.input}
            completed = {
                "toolCallId": call_id,
                "tool": call.tool,
                "output": call.output,
                "isError": False,
            }
            frames.append(
                Frame(
                    "tool_call_started",
                    {"type": "tool_call_started", **started},
                    record=("tool_call_started", started),
                )
            )
            frames += [
                Frame(
                    "tool_output_delta",
                    {"type": "tool_output_delta", "toolCallId": call_id, "delta": d},
                )
                for d in call.output_deltas
            ]
            wire = {
                "type": "tool_call_completed",
                "toolCallId": call_id,
                "output": call.output,
                "isError": False,
            }
            frames.append(
                Frame("tool_call_completed", wire, record=("tool_call_completed", completed))
            )
        return frames

    def record_rest(self) -> None:
        """Record the tool calls and the answer at once (JSON mode, registered/dispatched runs)."""
        for frame in self.tool_frames():
            if frame.record is not None:
                self.record(*frame.record)
        self.record("assistant_message", {"role": "assistant", "content": self.script.answer})

    def json_result(self) -> dict[str, Any]:
        faults = self.request.faults
        return {
            "runId": self.id,
            "sandboxId": self.thread.sandbox_id,
            "executionMode": self.request.agent.execution_mode,
            "status": faults.run_status,
            "result": self.script.answer if self.finished else None,
            "usage": final_usage(self.script, faults),
            "iterations": self.script.iterations,
            "threadId": self.thread.id,
        }

    def completed_frame(self) -> Frame:
        data = {
            "type": "run_completed",
            "runId": self.id,
            "threadId": self.thread.id,
            "status": self.request.faults.run_status,
            "result": self.script.answer if self.finished else None,
            "usage": final_usage(self.script, self.request.faults),
            "iterations": self.script.iterations,
        }
        return Frame("run_completed", data)

    def frames(self) -> list[Frame]:
        """Every frame of the stream, faults applied, in order."""
        faults = self.request.faults
        started = {
            "type": "run_started",
            "runId": self.id,
            "threadId": self.thread.id,
            "executionMode": self.request.agent.execution_mode,
            "sandboxId": self.thread.sandbox_id,
        }
        head = [Frame("run_started", started)]
        if faults.unknown_frames:
            status = {
                "type": "sandbox_status",
                "sandboxId": self.thread.sandbox_id,
                "status": "ready",
            }
            head.append(Frame("sandbox_status", status))
        if faults.non_json_frame:
            head.append(Frame("note", "hello, plain text"))
        if not self.finished:
            # Registered or dispatched: the answer lands in the thread, not in this stream.
            return self._cut(head, self.completed_frame())

        body = [
            Frame(
                "assistant_thinking_delta",
                {"type": "assistant_thinking_delta", "runId": self.id, "delta": d},
            )
            for d in self.script.thinking
        ]
        body += self.tool_frames()
        deltas = [
            Frame(
                "assistant_message_delta",
                {"type": "assistant_message_delta", "runId": self.id, "delta": d},
                memo=d,
            )
            for d in self.script.answer_deltas
        ]
        if faults.unknown_frames:
            metric = {"type": "x_custom_metric", "name": "time_to_first_token_ms", "value": 42}
            deltas.insert(len(deltas) // 2, Frame("x_custom_metric", metric))
        message = {"role": "assistant", "content": self.script.answer}
        tail = Frame(
            "assistant_message",
            {"type": "assistant_message", **message},
            record=("assistant_message", message),
        )
        return self._cut([*head, *body, *deltas, tail], self.completed_frame())

    def _cut(self, frames: list[Frame], completed: Frame) -> list[Frame]:
        """Apply cutAfter / errorAfter / done to the frames that precede run_completed."""
        faults = self.request.faults
        error_after, cut_after = faults.error_after, faults.cut_after
        if error_after is not None and (cut_after is None or error_after <= cut_after):
            error = {
                "code": "provider_error",
                "message": f"simulated provider failure after {error_after} frames "
                "(metadata.simulate.errorAfter)",
            }
            return [*frames[:error_after], Frame("error", {"type": "error", "error": error})]
        if cut_after is not None:
            # Never past the last frame before run_completed: a cut stream has no final frame.
            return frames[:cut_after]
        frames.append(completed)
        if faults.done:
            frames.append(Frame(None, "[DONE]"))
        return frames


class StreamResponse:
    """Writes a run's frames as SSE, recording thread events as their frames go out."""

    def __init__(self, run: Run) -> None:
        faults = run.request.faults
        self.run = run
        self.frames = run.frames()
        self.encoder = Encoder(event_line=not faults.no_event_line, multiline=faults.multiline_data)
        drip_ms = faults.drip_ms if faults.drip_ms is not None else run.request.agent.drip_ms
        self.drip = drip_ms / 1000
        self.keep_alive = faults.keep_alive
        self.stamp = faults.stamp_frames
        self.headers = [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
            ("x-accel-buffering", "no"),  # tells nginx-like proxies not to buffer the stream
            ("x-run-id", run.id),
            ("x-thread-id", run.thread.id),
        ]

    def _sent(self, frame: Frame) -> None:
        if frame.record is not None:
            self.run.record(*frame.record)

    async def __call__(self, send: Send, receive: Receive) -> None:
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        finished = False
        try:
            headers = [(k.encode(), v.encode("latin-1")) for k, v in self.headers]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if self.drip > 0:
                finished = await self._drip(send, gone)
            else:
                await self._batched(send)
                finished = True
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            if self.run.finished:
                self.run.end(self._outcome() if finished else "cancelled")

    def _outcome(self) -> str:
        """completed when run_completed went out; an error frame or a cut stream is a failure."""
        events = {frame.event for frame in self.frames}
        return "completed" if "run_completed" in events and "error" not in events else "failed"

    async def _drip(self, send: Send, gone: asyncio.Event) -> bool:
        """Send the frames one by one; False if the client left before the last one."""
        for index, frame in enumerate(self.frames):
            if index and await _pause(gone, self.drip):
                return False  # the client left: a dropped run records nothing more
            chunk = self.encoder.encode(frame)
            if self.stamp and isinstance(frame.data, dict):
                # For latency benchmarks: when this frame left, by this machine's clock.
                stamped = Frame(frame.event, {**frame.data, "sentAt": time.time()})
                chunk = self.encoder.encode(stamped)
            if self.keep_alive:
                chunk = PING + chunk
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            self._sent(frame)
        return True

    async def _batched(self, send: Send) -> None:
        buffer: list[bytes] = []
        size = 0
        pending: list[Frame] = []
        encode = self.encoder.encode
        for frame in self.frames:
            if self.keep_alive:
                buffer.append(PING)
            chunk = encode(frame)
            buffer.append(chunk)
            size += len(chunk)
            if frame.record is not None:
                pending.append(frame)
            if size >= BATCH_BYTES:
                await send(
                    {"type": "http.response.body", "body": b"".join(buffer), "more_body": True}
                )
                buffer, size = [], 0
                for done in pending:
                    self._sent(done)
                pending = []
        if buffer:
            await send({"type": "http.response.body", "body": b"".join(buffer), "more_body": True})
        for done in pending:
            self._sent(done)


async def _pause(gone: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(gone.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def handle_run(
    request: Request,
    keys: KeyStore,
    records: OrgRecords,
    account: Account,
    agent_slug: str | None = None,
) -> Response | StreamResponse | None:
    """The reply to a run request, or None when the client left during a simulated hang."""
    run_request = parse_run(await request.json_object(), agent_slug)
    faults = run_request.faults
    if faults.hang_seconds and await wait_for_disconnect(request.receive, faults.hang_seconds):
        return None
    if faults.status is not None:
        raise simulated_error(faults)
    run = Run(run_request, keys, records, account)
    if not run_request.stream or not run.finished:
        # JSON replies, and runs that are only registered or dispatched, have the whole answer
        # in the thread at once (for the latter it "arrives later in the thread").
        run.record_rest()
    if run_request.stream:
        return StreamResponse(run)
    if run.finished:
        run.end("completed")
    return ok(request, run.json_result())
