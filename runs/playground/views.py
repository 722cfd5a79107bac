"""The playground: run an agent from the browser and watch it live.

The page is a form. With JavaScript and "Stream" on, static/playground.js sends the form over
the run socket (runs.playground.consumers), which starts the run through
`runs.pipeline.start.launch` with a relay sink and streams its frames back. With "Stream" off,
htmx posts the same form to `run_now` and swaps in the result card; without JavaScript the form
posts there too and the page comes back with the result. Either way the form is read by
`runs.playground.forms.build_run_request`, which checks the body exactly as the gateway does.
This module holds the views: the page (and prefilling its form), run now, the result card,
stop, and the "View code" panel."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from runs.core.access import TeamRequest, for_team, get_for_team_or_404, team_view
from runs.core.agents import team_agents
from runs.core.crypto import KeyDecryptionError
from runs.core.snippets import request_snippets
from runs.core.validation import RunRequest
from runs.models import Run, Source, Team, Thread
from runs.pipeline.budgets import BudgetExceeded
from runs.pipeline.recording import storable
from runs.pipeline.start import NoRunToolsKey, launch
from runs.playground.forms import MESSAGE_ROLES, InvalidRun, PlaygroundForm, build_run_request
from runs.playground.markdown import render_markdown
from runs.playground.relay import RelaySink, mark_cancel_requested, signal_stop
from runs.playground.run_summary import error_text, refusal, run_url, summary, watch_url
from runs.playground.transcript import Conversation, load_conversation

RECENT_THREADS = 25

# --- Prefilling the form ------------------------------------------------------------------


def _metadata_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _from_run(run: Run) -> tuple[dict, list[dict], list[tuple[str, str]]]:
    """The form's initial values to run `run` again: same agent, input, config, metadata."""
    config = run.config if isinstance(run.config, dict) else {}
    initial = {
        "agent": run.agent,
        "prompt": run.prompt,
        "input_mode": "messages" if run.messages else "prompt",
        "max_tokens": config.get("maxTokens"),
        "max_turns": config.get("maxTurns"),
        "temperature": config.get("temperature"),
        "stream": run.stream,
    }
    messages = [
        {"role": message.get("role", "user"), "content": message.get("content") or ""}
        for message in (run.messages or [])
        if isinstance(message, dict)
    ]
    metadata = run.metadata if isinstance(run.metadata, dict) else {}
    rows = [(key, _metadata_text(value)) for key, value in metadata.items()]
    return initial, messages, rows


@dataclass
class PageState:
    initial: dict
    messages: list[dict]
    metadata: list[tuple[str, str]]
    watch: Run | None = None
    notice: str = ""
    conversation: Conversation | None = None


def _page_state(request: TeamRequest) -> PageState:
    team, query = request.team, request.GET
    state = PageState(initial={"stream": True}, messages=[], metadata=[])
    if query.get("run"):
        run = get_for_team_or_404(Run, team, pk=query["run"])
        state.initial, state.messages, state.metadata = _from_run(run)
        state.watch = run
        if run.upstream_thread_id:
            # The turns before it; the run itself is drawn live, or by its result card.
            conversation = load_conversation(team, run.upstream_thread_id, until=run)
            conversation.turns = [turn for turn in conversation.turns if turn.run != run]
            state.conversation = conversation
            if run.is_finished:
                # The next prompt continues the conversation, as in every chat tool.
                state.initial.update(thread=run.upstream_thread_id, prompt="", input_mode="prompt")
    elif query.get("from_run"):
        run = get_for_team_or_404(Run, team, pk=query["from_run"])
        state.initial, state.messages, state.metadata = _from_run(run)
    if query.get("thread"):
        # As stored: a NUL (which PostgreSQL cannot compare) is U+FFFD in every stored id.
        thread = for_team(Thread, team).filter(upstream_id=storable(query["thread"])).first()
        if thread is None:
            state.notice = "That thread is not one of this team's threads; starting a new one."
        else:
            state.initial["thread"] = thread.upstream_id
            state.initial["agent"] = thread.agent
            if not query.get("run"):
                state.conversation = load_conversation(team, thread.upstream_id)
    if query.get("agent") and "thread" not in state.initial:
        state.initial["agent"] = query["agent"][:200]
    return state


def _threads(team: Team, selected: str) -> list[Thread]:
    threads = list(
        for_team(Thread, team)
        .filter(deleted_at__isnull=True, archived=False)
        .order_by("-last_activity_at")[:RECENT_THREADS]
    )
    if selected and all(thread.upstream_id != selected for thread in threads):
        extra = for_team(Thread, team).filter(upstream_id=selected).first()
        if extra is not None:
            threads.insert(0, extra)
    return threads


def _result_context(run: Run) -> dict:
    return {
        "run": run,
        "summary": summary(run),
        "error": error_text(run),
        "answer_html": render_markdown(run.result),
    }


# --- Views --------------------------------------------------------------------------------


def _page(request: TeamRequest, state: PageState, form: PlaygroundForm, status: int = 200):
    agents, agents_from_upstream = team_agents(request.team)
    selected_thread = str(form["thread"].value() or "")
    watch = state.watch
    context = {
        "form": form,
        "agents": agents,
        "agents_from_upstream": agents_from_upstream,
        "threads": _threads(request.team, selected_thread),
        "selected_thread": selected_thread,
        "message_rows": state.messages or [{"role": "user", "content": ""}],
        "metadata_rows": state.metadata or [("", "")],
        "roles": MESSAGE_ROLES,
        "can_run": request.membership.can_run,
        "watch": watch,
        "watch_run_url": run_url(watch.pk) if watch is not None else "",
        "notice": state.notice,
        "conversation": state.conversation,
        "estimate_url": reverse("run_estimate"),
    }
    if watch is not None and watch.is_finished:
        context.update(_result_context(watch))
    return render(request, "runs/playground/page.html", context, status=status)


@require_GET
@team_view()
def playground(request: TeamRequest) -> HttpResponse:
    state = _page_state(request)
    return _page(request, state, PlaygroundForm(initial=state.initial))


async def run_to_end(team: Team, run_request: RunRequest, user) -> Run:
    """Start a run through the shared path and wait until it is recorded."""
    sink = RelaySink()
    launched = await launch(team, run_request, source=Source.PLAYGROUND, user=user, sinks=[sink])
    if launched.reader is None:
        return launched.run
    await sink.attach(launched.reader)
    # A teammate can watch it live meanwhile; the reader task ends after the run is recorded.
    await launched.reader.task
    return await Run.objects.aget(pk=launched.run.pk)


def _error_card(request: TeamRequest, errors: dict[str, list[str]], status: int):
    labels = {name: field.label or name for name, field in PlaygroundForm.base_fields.items()}
    lines = [
        f"{labels.get(field, 'Form')}: {message}" if field != "__all__" else message
        for field, messages in errors.items()
        for message in messages
    ]
    return render(request, "runs/playground/_problem.html", {"problems": lines}, status=status)


@require_POST
@team_view(run=True)
def run_now(request: TeamRequest) -> HttpResponse:
    """Run the form and answer with the result card (htmx) or the page with it (no JS)."""
    try:
        run_request, _body = build_run_request(request.POST)
    except InvalidRun as problem:
        if request.htmx:
            return _error_card(request, problem.errors, 200)
        form = PlaygroundForm(request.POST)
        form.is_valid()
        for field, messages in problem.errors.items():
            if field not in form.errors:
                for message in messages:
                    form.add_error(None if field == "__all__" else field, message)
        state = PageState(initial={}, messages=[], metadata=[])
        return _page(request, state, form, status=400)
    try:
        run = async_to_sync(run_to_end)(request.team, run_request, request.user)
    except (BudgetExceeded, NoRunToolsKey, KeyDecryptionError) as error:
        _code, message = refusal(error)
        status = 200 if request.htmx else 402 if isinstance(error, BudgetExceeded) else 503
        return _error_card(request, {"__all__": [message]}, status)
    if not request.htmx:
        return redirect(watch_url(run.pk))
    return render(request, "runs/playground/_result.html", _result_context(run))


@require_GET
@team_view()
def result_card(request: TeamRequest, run_id: int) -> HttpResponse:
    run = get_for_team_or_404(Run, request.team, pk=run_id)
    return render(request, "runs/playground/_result.html", _result_context(run))


@require_POST
@team_view(run=True)
def stop(request: TeamRequest, run_id: int) -> HttpResponse:
    """Stop a run from a page without a socket (the socket has its own stop message)."""
    run = get_for_team_or_404(Run, request.team, pk=run_id)
    stopped = mark_cancel_requested(run.pk)
    if stopped:
        async_to_sync(signal_stop)(run.pk)
    if request.htmx:
        message = "Stopping the run." if stopped else "The run had already ended."
        return render(request, "runs/playground/_problem.html", {"notice": message})
    return redirect(watch_url(run.pk))


@require_POST
@team_view()
def code(request: TeamRequest) -> HttpResponse:
    """The "View code" panel for the form as it stands."""
    context: dict[str, Any] = {}
    try:
        _run_request, body = build_run_request(request.POST)
    except InvalidRun as problem:
        context["problems"] = [
            message for messages in problem.errors.values() for message in messages
        ]
    else:
        url = request.build_absolute_uri(reverse("gateway_run"))
        context["samples"] = request_snippets(body, url)
    return render(request, "runs/playground/_code.html", context)
