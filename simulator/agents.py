"""The simulated agents and their scripts.

A script is a pure function of the agent, the request's text, its config and how many turns the
thread already has, so tests can assert exact text and usage. Ids (runs, threads, sandboxes) are
random and never feed into a script.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Any

# Tokens the history of one earlier turn is billed as. A fixed allowance per turn (rather than
# the real text of earlier turns) keeps a script a function of the turn *count* only.
HISTORY_TOKENS_PER_TURN = 96
# Per-message framing overhead, as chat APIs bill it.
TOKENS_PER_MESSAGE = 4
WORDS_PER_DELTA = 2

FILE_RE = re.compile(r"[\w./-]+\.(?:py|js|ts|md|txt|toml|json|ya?ml|html|css|cfg|ini)\b")


@dataclass(frozen=True)
class Agent:
    slug: str
    name: str
    description: str
    model: str
    execution_mode: str
    system_tokens: int  # system prompt (and tool schemas) billed on every run
    created_at: str
    drip_ms: float = 0.0  # default pause between stream frames

    @property
    def id(self) -> str:
        return f"agt_{zlib.crc32(self.slug.encode()):08x}"

    @property
    def in_sandbox(self) -> bool:
        return self.execution_mode == "in_sandbox"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "slug": self.slug,
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "executionMode": self.execution_mode,
            "status": "active",
            "createdAt": self.created_at,
            "updatedAt": self.created_at,
        }


AGENTS: tuple[Agent, ...] = (
    Agent(
        slug="code-assistant",
        name="Code Assistant",
        description="Reads files and runs the test suite in a sandbox before answering.",
        model="claude-sonnet-4-5",
        execution_mode="in_sandbox",
        system_tokens=420,
        created_at="2025-01-15T09:00:00.000Z",
    ),
    Agent(
        slug="support-chat",
        name="Support Chat",
        description="A plain managed chat agent for customer questions.",
        model="gpt-5-mini",
        execution_mode="managed",
        system_tokens=180,
        created_at="2025-02-03T10:30:00.000Z",
    ),
    Agent(
        slug="deep-thinker",
        name="Deep Thinker",
        description="Thinks out loud before answering; reports reasoning tokens.",
        model="claude-opus-4-1",
        execution_mode="managed",
        system_tokens=260,
        created_at="2025-03-21T14:05:00.000Z",
    ),
    Agent(
        slug="slow-poke",
        name="Slow Poke",
        description="Drips about 40 deltas 50 ms apart; for tests that stop or reload mid-run.",
        model="claude-haiku-4-5",
        execution_mode="in_sandbox",
        system_tokens=120,
        created_at="2025-04-02T08:15:00.000Z",
        drip_ms=50.0,
    ),
)

MODELS: dict[str, list[dict[str, Any]]] = {
    "platform": [
        {"model": "claude-sonnet-4-5", "displayName": "Claude Sonnet 4.5", "available": True},
        {"model": "claude-opus-4-1", "displayName": "Claude Opus 4.1", "available": True},
        {"model": "claude-haiku-4-5", "displayName": "Claude Haiku 4.5", "available": True},
        {"model": "gpt-5-mini", "displayName": "GPT-5 mini", "available": True},
        {"model": "gemini-2.5-pro", "displayName": "Gemini 2.5 Pro", "available": False},
    ],
    "byok": [
        {"model": "gpt-5", "displayName": "GPT-5", "available": False},
        {"model": "claude-sonnet-4-5", "displayName": "Claude Sonnet 4.5", "available": False},
    ],
}


def find_agent(slug_or_id: str) -> Agent | None:
    """The contract lets callers name an agent by slug or by id."""
    for agent in AGENTS:
        if slug_or_id in (agent.slug, agent.id):
            return agent
    return None


@dataclass(frozen=True)
class RunInput:
    """What a script may depend on."""

    prompt: str  # the newest user message
    message_texts: tuple[str, ...]  # every message sent with this request, prompt included
    turns: int  # runs the thread already had before this one
    max_tokens: int | None = None
    max_turns: int | None = None
    deltas: int | None = None  # metadata.simulate.deltas: exact number of answer deltas


@dataclass(frozen=True)
class ToolCall:
    tool: str
    input: dict[str, Any]
    output_deltas: tuple[str, ...]

    @property
    def output(self) -> str:
        return "".join(self.output_deltas)


@dataclass(frozen=True)
class Script:
    thinking: tuple[str, ...]
    tool_calls: tuple[ToolCall, ...]
    answer_deltas: tuple[str, ...]
    iterations: int
    usage: dict[str, int]

    @property
    def answer(self) -> str:
        return "".join(self.answer_deltas)


def tokens(chars: int) -> int:
    """About four characters a token, the usual rule of thumb."""
    return math.ceil(chars / 4)


def quote(prompt: str, words: int = 6) -> str:
    parts = prompt.split()
    text = " ".join(parts[:words]).rstrip(".,;:!?")
    return text + "…" if len(parts) > words else text


def pick(prompt: str, options: tuple[str, ...]) -> str:
    # crc32, not hash(): hash() is salted per process, and scripts must not change on restart.
    return options[zlib.crc32(prompt.encode()) % len(options)]


def split_words(text: str, per_delta: int = WORDS_PER_DELTA) -> tuple[str, ...]:
    words = re.findall(r"\S+\s*", text)
    return tuple("".join(words[i : i + per_delta]) for i in range(0, len(words), per_delta))


def reshape(deltas: tuple[str, ...], count: int) -> tuple[str, ...]:
    """Exactly `count` deltas: regroup the answer's words, or cycle them when it is too short."""
    words = re.findall(r"\S+\s*", "".join(deltas)) or ["ok"]
    if count <= len(words):
        size, extra = divmod(len(words), count)
        out, start = [], 0
        for i in range(count):
            end = start + size + (1 if i < extra else 0)
            out.append("".join(words[start:end]))
            start = end
        return tuple(out)
    spaced = [w if w[-1].isspace() else w + " " for w in words]
    cycled = [spaced[i % len(spaced)] for i in range(count)]
    cycled[-1] = cycled[-1].rstrip()
    return tuple(cycled)


def truncate(deltas: tuple[str, ...], max_chars: int) -> tuple[str, ...]:
    """Cut the answer where the model would hit maxTokens."""
    out: list[str] = []
    used = 0
    for delta in deltas:
        if used + len(delta) > max_chars:
            if max_chars > used:
                out.append(delta[: max_chars - used])
            break
        out.append(delta)
        used += len(delta)
    return tuple(out)


def _continuation(run: RunInput) -> str:
    if run.turns:
        return f" (Reply {run.turns + 1} in this thread; I kept the earlier turns in mind.)"
    return ""


SUPPORT_LINES = (
    "I checked the account settings and everything looks in order.",
    "The quickest fix is to sign out, clear the cache and sign in again.",
    "The status page shows no incident right now, so this is most likely local.",
    "I have opened a ticket so an engineer can take a closer look today.",
)

DEEP_LINES = (
    "start small, measure, and only then generalise.",
    "the simplest explanation fits the facts best.",
    "it depends on the constraints, and the binding one is time.",
)

SLOW_FILLER = [
    "one",
    "word",
    "at",
    "a",
    "time",
    "so",
    "that",
    "a",
    "test",
    "can",
    "stop",
    "or",
    "reload",
    "me",
    "halfway",
    "through",
]
SLOW_WORDS = 40


def _support_chat(run: RunInput) -> tuple[tuple[str, ...], tuple[ToolCall, ...], str]:
    q = quote(run.prompt)
    answer = f'Thanks for reaching out about "{q}". {pick(run.prompt, SUPPORT_LINES)}'
    return (), (), answer + _continuation(run)


def _deep_thinker(run: RunInput) -> tuple[tuple[str, ...], tuple[ToolCall, ...], str]:
    q = quote(run.prompt)
    points = 2 + zlib.crc32(run.prompt.encode()) % 3
    thinking = (
        f'The question is "{q}". Let me split it into parts. What is really being asked? '
        f"What do I already know? I will weigh {points} considerations before answering."
    )
    answer = f'After weighing {points} considerations about "{q}": {pick(run.prompt, DEEP_LINES)}'
    return split_words(thinking, 3), (), answer + _continuation(run)


def _code_assistant(run: RunInput) -> tuple[tuple[str, ...], tuple[ToolCall, ...], str]:
    q = quote(run.prompt)
    match = FILE_RE.search(run.prompt)
    path = match.group(0) if match else "README.md"
    crc = zlib.crc32(run.prompt.encode())
    passed = 6 + crc % 30
    seconds = 0.4 + (crc % 50) / 100
    calls = (
        ToolCall(
            "read_file",
            {"path": path},
            (f"# {path}\n", "def main() -> None:\n", f'    """{q}"""\n', "    run()\n"),
        ),
        ToolCall(
            "run_tests",
            {"command": "pytest -q"},
            (
                f"collected {passed} items\n",
                "." * passed + " [100%]\n",
                f"{passed} passed in {seconds:.2f}s\n",
            ),
        ),
    )
    # iterations = tool calls + 1 must stay within maxTurns, so the turn limit drops tools.
    allowed = len(calls) if run.max_turns is None else max(0, min(len(calls), run.max_turns - 1))
    if allowed == 2:
        answer = (
            f'I read {path} and ran the test suite for "{q}": {passed} passed, 0 failed. '
            "The code looks healthy, so no change is needed yet."
        )
    elif allowed == 1:
        answer = (
            f'I read {path} for "{q}", but the turn limit stopped me before running the tests. '
            "Raise maxTurns to let me run them."
        )
    else:
        answer = (
            f'With a single turn I cannot use tools, so for "{q}" my advice is: '
            f"read {path} and run the tests yourself."
        )
    return (), calls[:allowed], answer + _continuation(run)


def _slow_poke(run: RunInput) -> tuple[tuple[str, ...], tuple[ToolCall, ...], str]:
    words = ["Taking", "it", "slowly:", *quote(run.prompt).split()[:6]]
    words += [SLOW_FILLER[i % len(SLOW_FILLER)] for i in range(SLOW_WORDS - len(words))]
    return (), (), " ".join(words) + "."


SCRIPTS = {
    "code-assistant": _code_assistant,
    "support-chat": _support_chat,
    "deep-thinker": _deep_thinker,
    "slow-poke": _slow_poke,
}


def compose(agent: Agent, run: RunInput) -> Script:
    thinking, calls, answer = SCRIPTS[agent.slug](run)
    per_delta = 1 if agent.slug == "slow-poke" else WORDS_PER_DELTA
    deltas = split_words(answer, per_delta)
    if run.deltas is not None:
        deltas = reshape(deltas, run.deltas)
    if run.max_tokens is not None:
        deltas = truncate(deltas, run.max_tokens * 4)

    history = run.turns * HISTORY_TOKENS_PER_TURN
    sent = sum(tokens(len(text)) + TOKENS_PER_MESSAGE for text in run.message_texts)
    # Tool output is fed back to the model, so it is billed as input of the next iteration.
    tool_input = sum(tokens(len(call.output)) for call in calls)
    input_tokens = agent.system_tokens + sent + history + tool_input
    output_tokens = tokens(sum(len(d) for d in deltas))
    usage = {"inputTokens": input_tokens, "outputTokens": output_tokens}
    if history:
        usage["cachedInputTokens"] = history
    if thinking:
        usage["reasoningTokens"] = tokens(sum(len(t) for t in thinking))
    usage["totalTokens"] = input_tokens + output_tokens
    return Script(thinking, calls, deltas, len(calls) + 1, usage)
