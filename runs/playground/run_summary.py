"""A run as the playground shows it, on the page and over its socket: its summary, the
sentence for a run that did not complete, why a run could not start, and its links."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone

from runs.history.threads import page_url
from runs.models import Run, RunStatus
from runs.pipeline.budgets import BudgetExceeded
from runs.pipeline.start import NoRunToolsKey
from runs.templatetags.rtdash_history import run_cost


def run_url(run_id: int) -> str:
    return reverse("run_detail", args=[run_id])


def continue_url(upstream_id: str, agent: str) -> str:
    return f"{reverse('playground')}?{urlencode({'thread': upstream_id, 'agent': agent})}"


def watch_url(run_id: int) -> str:
    return f"{reverse('playground')}?{urlencode({'run': run_id})}"


# The columns `summary` and `browser_state` read: a run with these loaded needs no query.
SUMMARY_FIELDS = frozenset(
    {
        "agent",
        "status",
        "error_code",
        "error_message",
        "http_status",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "reasoning_tokens",
        "total_tokens",
        "iterations",
        "cost",
        "cost_status",
        "duration_ms",
        "first_byte_ms",
        "upstream_thread_id",
        "started_at",
    }
)


def summary(run: Run) -> dict[str, Any]:
    """A finished (or running) run for the page: status, usage, timings and links."""
    usage = {
        "input": run.input_tokens,
        "output": run.output_tokens,
        "cached": run.cached_input_tokens,
        "reasoning": run.reasoning_tokens,
        "total": run.total_tokens,
    }
    thread = run.upstream_thread_id
    return {
        "run": run.pk,
        "agent": run.agent,
        "status": run.status,
        "statusLabel": run.get_status_display(),
        "finished": run.is_finished,
        "errorCode": run.error_code,
        "errorMessage": run.error_message,
        "httpStatus": run.http_status,
        "usage": {name: value for name, value in usage.items() if value is not None},
        "iterations": run.iterations,
        # "unpriced" when no price applies, never $0 (runs.templatetags.rtdash_history).
        "cost": run_cost(run) if run.is_finished else "",
        "durationMs": run.duration_ms,
        "firstByteMs": run.first_byte_ms,
        "runUrl": run_url(run.pk),
        "cardUrl": reverse("playground_card", args=[run.pk]),
        "threadId": thread,
        "threadUrl": page_url(thread) if thread else "",
        "continueUrl": continue_url(thread, run.agent) if thread else "",
    }


def browser_state(run: Run, first_token: datetime | None = None) -> dict[str, Any]:
    """The run as a socket sends it to the browser: its summary, how long it has been going,
    and when its first token came (when known)."""
    result = summary(run)
    result["elapsedMs"] = round((timezone.now() - run.started_at).total_seconds() * 1000)
    if first_token is not None:
        result["firstTokenMs"] = round((first_token - run.started_at).total_seconds() * 1000)
    return result


def error_text(run: Run) -> str:
    """One clear sentence for a run that did not complete."""
    if run.status in (RunStatus.COMPLETED, RunStatus.RUNNING):
        return ""
    parts = []
    if run.http_status and run.http_status >= 400:
        parts.append(f"RunTools answered {run.http_status}")
    if run.error_code:
        parts.append(f"({run.error_code})" if parts else run.error_code)
    head = " ".join(parts)
    message = run.error_message or ""
    if head and message:
        return f"{head}: {message}"
    return head or message or f"The run ended {run.get_status_display().lower()}."


def refusal(error: Exception) -> tuple[str, str]:
    """(code, message) for what stops a run from starting; never includes a key."""
    if isinstance(error, BudgetExceeded):
        return error.code, error.message
    if isinstance(error, NoRunToolsKey):
        return "no_runtools_key", str(error)
    return (
        "runtools_key_unreadable",
        "The team's RunTools key cannot be decrypted; an owner can replace it in Settings.",
    )
