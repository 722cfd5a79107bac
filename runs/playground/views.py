"""The playground: run an agent from the browser and watch it live.

The page is a form. With JavaScript and "Stream" on, static/playground.js sends the form over
the run socket (runs.playground.consumers), which starts the run through
`runs.pipeline.start.launch` with a relay sink and streams its frames back. With "Stream" off,
htmx posts the same form to `run_now` and swaps in the result card; without JavaScript the form
posts there too and the page comes back with the result. Either way the form is read by
`PlaygroundForm` and the body is checked by `runs.core.validation.validate_run`, exactly as the
gateway checks it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pprint
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django import forms
from django.core.cache import cache
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.datastructures import MultiValueDict
from django.views.decorators.http import require_GET, require_POST

from runs.core import upstream
from runs.core.access import TeamRequest, for_team, get_for_team_or_404, team_view
from runs.core.crypto import KeyDecryptionError, SealedKey
from runs.core.ratelimit import CacheUnavailable
from runs.core.validation import (
    MAX_TOKENS_RANGE,
    MAX_TURNS_RANGE,
    TEMPERATURE_RANGE,
    HostileJSON,
    InvalidRequest,
    RunRequest,
    check_json_value,
    loads_strict,
    validate_run,
)
from runs.models import DailyUsage, Run, RunStatus, Source, Team, Thread
from runs.pipeline.budgets import BudgetExceeded
from runs.pipeline.start import NoRunToolsKey, launch
from runs.playground.relay import RelaySink, mark_cancel_requested, signal_stop

# The agent list is asked of the upstream at most once a minute per team; a failure is
# remembered for a few seconds so a down upstream does not slow every page load.
AGENTS_CACHE_SECONDS = 60
AGENTS_FAILURE_CACHE_SECONDS = 10
AGENTS_TIMEOUT_SECONDS = 3.0
RECENT_THREADS = 25
MESSAGE_ROLES = ("user", "assistant", "system")

# Where validate_run's field names show up in the form.
FORM_FIELDS = {
    "agent": "agent",
    "prompt": "prompt",
    "threadId": "thread",
    "stream": "stream",
    "config.maxTokens": "max_tokens",
    "config.maxTurns": "max_turns",
    "config.temperature": "temperature",
    "metadata": "metadata",
}


class InvalidRun(Exception):
    """The playground form cannot become a run request; `errors` maps field → messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(message for messages in errors.values() for message in messages))
        self.errors = errors


def _range_help(low, high) -> str:
    return f"{low:,g} to {high:,g}"


class PlaygroundForm(forms.Form):
    agent = forms.CharField(label="Agent", max_length=200)
    input_mode = forms.ChoiceField(
        label="Send",
        choices=[("prompt", "Single turn"), ("messages", "Message history")],
        required=False,
        initial="prompt",
    )
    prompt = forms.CharField(label="Prompt", required=False, strip=False)
    # Read from the message_role/message_content and meta_key/meta_value rows in clean();
    # declared so their errors have a place.
    messages = forms.Field(label="Messages", required=False)
    metadata = forms.Field(label="Metadata", required=False)
    thread = forms.CharField(label="Thread", required=False, max_length=200)
    max_tokens = forms.IntegerField(
        label="Max tokens",
        required=False,
        min_value=MAX_TOKENS_RANGE[0],
        max_value=MAX_TOKENS_RANGE[1],
        help_text=_range_help(*MAX_TOKENS_RANGE),
    )
    max_turns = forms.IntegerField(
        label="Max turns",
        required=False,
        min_value=MAX_TURNS_RANGE[0],
        max_value=MAX_TURNS_RANGE[1],
        help_text=_range_help(*MAX_TURNS_RANGE),
    )
    temperature = forms.FloatField(
        label="Temperature",
        required=False,
        min_value=TEMPERATURE_RANGE[0],
        max_value=TEMPERATURE_RANGE[1],
        help_text=_range_help(*TEMPERATURE_RANGE),
    )
    stream = forms.BooleanField(label="Stream", required=False, initial=True)

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("input_mode") == "messages":
            cleaned["messages"] = self._clean_messages()
        else:
            cleaned["input_mode"] = "prompt"
            cleaned["messages"] = None
            if not (cleaned.get("prompt") or "").strip() and "prompt" not in self.errors:
                self.add_error("prompt", "Write a prompt.")
        cleaned["metadata"] = self._clean_metadata()
        return cleaned

    def _rows(self, *names: str) -> list[tuple[str, ...]]:
        columns = [self.data.getlist(name) for name in names]
        return list(zip(*columns, strict=False))

    def _clean_messages(self) -> list[dict]:
        messages = []
        for role, content in self._rows("message_role", "message_content"):
            if not content.strip():
                continue
            if role not in MESSAGE_ROLES:
                self.add_error("messages", f"A message's role must be one of {MESSAGE_ROLES}.")
                continue
            messages.append({"role": role, "content": content})
        if not messages and "messages" not in self.errors:
            self.add_error("messages", "Add at least one message with some text.")
        return messages

    def _clean_metadata(self) -> dict:
        metadata: dict[str, Any] = {}
        for key, value in self._rows("meta_key", "meta_value"):
            key = key.strip()
            if not key and not value.strip():
                continue
            if not key:
                self.add_error("metadata", f"The metadata value {value[:40]!r} needs a key.")
                continue
            if key in metadata:
                self.add_error("metadata", f"The metadata key {key!r} appears twice.")
                continue
            try:
                metadata[key] = _metadata_value(value)
            except HostileJSON as problem:
                self.add_error("metadata", f"The value of {key[:40]!r}: {problem.message}")
        return metadata

    def body(self) -> dict:
        """The /v1/run body this form describes (after is_valid())."""
        data = self.cleaned_data
        body: dict[str, Any] = {"agent": data["agent"].strip()}
        if data["input_mode"] == "messages":
            body["messages"] = data["messages"]
        else:
            body["prompt"] = data["prompt"]
        if data.get("thread"):
            body["threadId"] = data["thread"].strip()
        body["stream"] = bool(data.get("stream"))
        config = {
            name: data[field]
            for name, field in (
                ("maxTokens", "max_tokens"),
                ("maxTurns", "max_turns"),
                ("temperature", "temperature"),
            )
            if data.get(field) is not None
        }
        if config:
            body["config"] = config
        if data["metadata"]:
            body["metadata"] = data["metadata"]
        return body


def _metadata_value(text: str) -> Any:
    """A value that reads as JSON is sent as JSON (objects, numbers, true); else as text.

    Raises HostileJSON for what looks like JSON but is refused (NaN, Infinity, 1e999, nesting
    past MAX_JSON_DEPTH): sent as text, it would not be what the person meant.
    """
    try:
        return loads_strict(text, "metadata")
    except HostileJSON:
        raise
    except InvalidRequest:
        return text


def _form_errors(form: forms.Form) -> dict[str, list[str]]:
    return {
        field: [str(message) for message in messages] for field, messages in form.errors.items()
    }


def build_run_request(data: MultiValueDict) -> tuple[RunRequest, dict]:
    """Read the playground form into a validated RunRequest and its body. Raises InvalidRun."""
    form = PlaygroundForm(data)
    if not form.is_valid():
        raise InvalidRun(_form_errors(form))
    body = form.body()
    try:
        # What the gateway's parser checks in a body, checked in the one built here (a form
        # sent over the run socket can carry lone surrogates in any field).
        check_json_value(body, "", root="body")
        raw = json.dumps(body, separators=(",", ":")).encode()
        run_request = validate_run(body, raw)
    except InvalidRequest as problem:
        field = FORM_FIELDS.get(problem.field)
        if field is None:
            # A nested path (`metadata.k`, `messages[0].content`): the form field it is in.
            top = problem.field.replace("[", ".").split(".")[0]
            field = FORM_FIELDS.get(top, "messages" if top == "messages" else None)
        raise InvalidRun({field or "__all__": [problem.message]}) from None
    return run_request, body


# --- What the page offers: agents, threads, links -----------------------------------------


@dataclass(frozen=True)
class Agent:
    slug: str
    name: str = ""
    description: str = ""


async def _fetch_agents(key: SealedKey) -> list[Agent] | None:
    try:
        async with asyncio.timeout(AGENTS_TIMEOUT_SECONDS):
            response = await upstream.call(key, "GET", "/agents")
    except (upstream.UpstreamError, TimeoutError):
        return None
    if response.status_code != 200:
        return None
    try:
        envelope = response.json()
    except ValueError:
        return None
    items = envelope.get("data", envelope) if isinstance(envelope, dict) else envelope
    if not isinstance(items, list):
        return None
    agents = []
    for item in items:
        if not isinstance(item, dict):
            continue
        slug = item.get("slug") or item.get("id")
        if isinstance(slug, str) and slug:
            name, description = item.get("name"), item.get("description")
            agents.append(
                Agent(
                    slug=slug[:200],
                    name=name if isinstance(name, str) else "",
                    description=description if isinstance(description, str) else "",
                )
            )
    return agents


def _upstream_agents(team: Team) -> list[Agent] | None:
    key = team.default_key()
    if key is None:
        return None
    sealed = SealedKey(key.ciphertext)
    try:
        sealed.check()
    except KeyDecryptionError:
        return None
    return async_to_sync(_fetch_agents)(sealed)


def _history_agents(team: Team) -> list[Agent]:
    # The daily rollup has one row per agent and day: far fewer rows than the runs table.
    slugs = for_team(DailyUsage, team).order_by("agent").values_list("agent", flat=True).distinct()
    return [Agent(slug=slug) for slug in slugs[:200] if slug]


def team_agents(team: Team) -> tuple[list[Agent], bool]:
    """The agents to offer, and whether they came from the upstream (else from history)."""
    cache_key = f"rtdash:playground:agents:{team.pk}"
    try:
        agents = cache.get(cache_key)
    except CacheUnavailable:
        agents = None  # the cache's Redis is down: ask the upstream, the page still works
    if agents is None:
        fetched = _upstream_agents(team)
        agents = fetched if fetched is not None else False
        timeout = AGENTS_CACHE_SECONDS if fetched is not None else AGENTS_FAILURE_CACHE_SECONDS
        with contextlib.suppress(CacheUnavailable):
            cache.set(cache_key, agents, timeout)
    if agents is False:
        return _history_agents(team), False
    return agents, True


def url_or_path(name: str, argument: object, fallback: str) -> str:
    """A page of another feature by name, or its path while that feature is being built."""
    try:
        return reverse(name, args=[argument])
    except NoReverseMatch:
        return fallback


def run_url(run_id: int) -> str:
    return url_or_path("run_detail", run_id, f"/runs/{run_id}/")


def thread_url(upstream_id: str) -> str:
    return url_or_path("thread_detail", upstream_id, f"/threads/{upstream_id}/")


def continue_url(upstream_id: str, agent: str) -> str:
    return f"{reverse('playground')}?{urlencode({'thread': upstream_id, 'agent': agent})}"


def watch_url(run_id: int) -> str:
    return f"{reverse('playground')}?{urlencode({'run': run_id})}"


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
        "durationMs": run.duration_ms,
        "firstByteMs": run.first_byte_ms,
        "runUrl": run_url(run.pk),
        "cardUrl": reverse("playground_card", args=[run.pk]),
        "threadId": thread,
        "threadUrl": thread_url(thread) if thread else "",
        "continueUrl": continue_url(thread, run.agent) if thread else "",
    }


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


def _page_state(request: TeamRequest) -> PageState:
    team, query = request.team, request.GET
    state = PageState(initial={"stream": True}, messages=[], metadata=[])
    if query.get("run"):
        run = get_for_team_or_404(Run, team, pk=query["run"])
        state.initial, state.messages, state.metadata = _from_run(run)
        state.watch = run
    elif query.get("from_run"):
        run = get_for_team_or_404(Run, team, pk=query["from_run"])
        state.initial, state.messages, state.metadata = _from_run(run)
    if query.get("thread"):
        thread = for_team(Thread, team).filter(upstream_id=query["thread"]).first()
        if thread is None:
            state.notice = "That thread is not one of this team's threads; starting a new one."
        else:
            state.initial["thread"] = thread.upstream_id
            state.initial["agent"] = thread.agent
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


def _estimate_url() -> str:
    # ISSUE 7 (prices and budgets) owns the estimate: the playground only shows it, and only
    # once that feature's URL exists.
    try:
        return reverse("run_estimate")
    except NoReverseMatch:
        return ""


def _result_context(run: Run) -> dict:
    return {"run": run, "summary": summary(run), "error": error_text(run)}


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
        "estimate_url": _estimate_url(),
    }
    if watch is not None and watch.is_finished:
        context.update(_result_context(watch))
    return render(request, "runs/playground/page.html", context, status=status)


@require_GET
@team_view()
def playground(request: TeamRequest) -> HttpResponse:
    state = _page_state(request)
    return _page(request, state, PlaygroundForm(initial=state.initial))


async def _run_to_end(team: Team, run_request: RunRequest, user) -> Run:
    """Start a run through the shared path and wait until it is recorded."""
    sink = RelaySink()
    launched = await launch(team, run_request, source=Source.PLAYGROUND, user=user, sinks=[sink])
    if launched.reader is None:
        return launched.run
    await sink.attach(launched.reader)
    # A teammate can watch it live meanwhile; the reader task ends after the run is recorded.
    await launched.reader.task
    return await Run.objects.aget(pk=launched.run.pk)


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
        run = async_to_sync(_run_to_end)(request.team, run_request, request.user)
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


def code_samples(body: dict, base_url: str) -> dict[str, str]:
    """The same request as curl and as Python (httpx), with $RTDASH_TOKEN for the key."""
    pretty = json.dumps(body, indent=2, ensure_ascii=False)
    url = f"{base_url}/v1/run"
    stream = body.get("stream", True)
    curl = (
        f"curl {'-N ' if stream else ''}{url} \\\n"
        '  -H "X-API-Key: $RTDASH_TOKEN" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        "  --data-binary @- <<'JSON'\n"
        f"{pretty}\nJSON"
    )
    literal = pprint.pformat(body, indent=1, width=88, sort_dicts=False)
    if stream:
        call = (
            '    with client.stream("POST", "/v1/run", json=body) as response:\n'
            "        response.raise_for_status()\n"
            "        for line in response.iter_lines():\n"
            "            print(line)\n"
        )
    else:
        call = (
            '    response = client.post("/v1/run", json=body)\n'
            "    response.raise_for_status()\n"
            '    print(response.json()["data"]["result"])\n'
        )
    python = (
        "import os\n\nimport httpx\n\n"
        f"body = {literal}\n\n"
        "with httpx.Client(\n"
        f'    base_url="{base_url}",\n'
        '    headers={"X-API-Key": os.environ["RTDASH_TOKEN"]},\n'
        "    timeout=None,\n"
        ") as client:\n"
        f"{call}"
    )
    return {"curl": curl, "python": python}


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
        base = request.build_absolute_uri("/").rstrip("/")
        context["samples"] = code_samples(body, base)
    return render(request, "runs/playground/_code.html", context)
