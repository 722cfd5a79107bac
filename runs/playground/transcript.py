"""The conversation the playground shows: a thread's recorded turns, oldest first.

`/playground?thread=<id>` (and "Continue" on a thread page) and a finished `?run=<id>` load
the turns rtdash recorded for that thread, read through runs.history.threads (one reading of a
thread for every page), with each turn's thinking from its stored frames. The live turn is
drawn by static/playground.js in the same shape (templates/runs/playground/_turn.html).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils.safestring import SafeString

from runs.history.threads import ToolUse, build_turns, thread_runs
from runs.models import Run, Team
from runs.pipeline.frames import stored_payloads
from runs.playground.markdown import render_markdown
from runs.playground.run_summary import error_text, summary

# The most turns one page loads: a longer thread shows its latest turns (and says so).
MAX_TURNS = 100


@dataclass
class ConversationTurn:
    user: str
    answer: str
    thinking: str = ""
    tools: list[ToolUse] = field(default_factory=list)
    run: Run | None = None
    error: str = ""

    @property
    def answer_html(self) -> SafeString:
        return render_markdown(self.answer)

    @property
    def footer(self) -> dict:
        return summary(self.run) if self.run is not None else {}


@dataclass
class Conversation:
    thread: str
    agent: str
    turns: list[ConversationTurn]
    earlier: int = 0  # turns older than the ones shown


def _thinking(run_ids: list[int]) -> dict[int, str]:
    parts: dict[int, list[str]] = {}
    for run_id, payload in stored_payloads(run_ids, ("assistant_thinking_delta",)):
        if isinstance(payload.get("delta"), str):
            parts.setdefault(run_id, []).append(payload["delta"])
    return {run_id: "".join(texts) for run_id, texts in parts.items()}


def _turns(runs: list[Run]) -> list[ConversationTurn]:
    thinking = _thinking([run.pk for run in runs if run.frame_count])
    return [
        ConversationTurn(
            user=turn.user,
            answer=turn.assistant,
            thinking=thinking.get(turn.run.pk, ""),
            tools=turn.tools,
            run=turn.run,
            error=error_text(turn.run),
        )
        for turn in build_turns(runs, [])
        if turn.run is not None
    ]


def load_conversation(team: Team, upstream_id: str, until: Run | None = None) -> Conversation:
    """The team's recorded turns of thread `upstream_id`, up to and including `until`."""
    runs = thread_runs(team, upstream_id)
    if until is not None:
        runs = runs.filter(started_at__lte=until.started_at).exclude(
            started_at=until.started_at, pk__gt=until.pk
        )
    total = runs.count()
    shown = list(runs[max(0, total - MAX_TURNS) :])
    agent = shown[-1].agent if shown else ""
    return Conversation(upstream_id, agent, _turns(shown), earlier=total - len(shown))


def single_run(run: Run) -> Conversation:
    """A run outside any thread, as a conversation of one turn."""
    return Conversation("", run.agent, _turns([run]))
