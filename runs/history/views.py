"""Run history and threads: /runs, /runs/<id>, exports, /threads, /threads/<id>.

Every page works without JavaScript. With htmx, the same URL answers with just the fragment
the request targets (the runs table, the next rows, a run's events), which the full page
also includes, so there is one template per fragment either way. Upstream content (prompts,
results, tool output, metadata, frames) is only ever put into templates as text, which
Django escapes; nothing here marks anything safe.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib import messages
from django.db.models import QuerySet
from django.db.models.functions import Substr
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from runs.core import upstream
from runs.core.access import TeamRequest, for_team, get_for_team_or_404, team_view
from runs.core.audit import record
from runs.core.snippets import Snippets, request_snippets
from runs.core.spreadsheet import csv_cell
from runs.history import filters as filters_module
from runs.history import threads as conversation
from runs.history.filters import (
    NEWEST_FIRST,
    Cursor,
    RunFilterForm,
    page_of,
    scan_floor,
    team_agents,
)
from runs.history.timeline import build_timeline
from runs.models import Run, Thread

RAW_FRAMES_PAGE = 200
EXPORT_CHUNK = 2000
TITLE_MAX = 200


def _fragment(request: TeamRequest, fragments: dict[str, str], page: str) -> str:
    """The template for this request: the fragment htmx targets, else the whole page."""
    if request.htmx and not request.htmx.history_restore_request:
        return fragments.get(request.htmx.target or "", page)
    return page


def _page_url(name: str, fallback: str) -> str:
    # The playground lands separately; until its URL exists, link to where it will be.
    try:
        return reverse(name)
    except NoReverseMatch:
        return fallback


# --- The runs list ------------------------------------------------------------------------


def _listed_runs(runs: QuerySet[Run]) -> QuerySet[Run]:
    """Only what the table shows: a prompt can be megabytes, its first line is enough."""
    return (
        runs.select_related("user", "token", "thread")
        .only(
            "pk",
            "team_id",
            "agent",
            "status",
            "source",
            "started_at",
            "duration_ms",
            "input_tokens",
            "output_tokens",
            "cost",
            "cost_status",
            "upstream_thread_id",
            "synthetic",
            "error_code",
            "user__username",
            "token__name",
            "token__prefix",
            "thread__title",
            "thread__upstream_id",
        )
        .annotate(prompt_head=Substr("prompt", 1, 120))
    )


@require_GET
@team_view()
def run_list(request: TeamRequest) -> HttpResponse:
    form = RunFilterForm(request.GET, team=request.team)
    filters = form.filters()
    cursor = Cursor.decode(request.GET.get("before"))
    runs = filters.apply(for_team(Run, request.team))
    before = cursor.started_at if cursor else None
    floor = scan_floor(request.team, before, filters.since) if filters.reads_rows else None
    page = page_of(_listed_runs(runs), cursor, floor=floor)
    query = filters.query_string()
    context = {
        "form": form,
        "filters": filters,
        "agents": form.agents,
        "page": page,
        "query": query,
        "more_url": f"?{query}&before={page.next_cursor}" if page.next_cursor else "",
        "is_first_page": cursor is None,
        "scan_budget": filters_module.SCAN_BUDGET,
    }
    template = _fragment(
        request,
        {"run-table": "runs/history/_run_table.html", "more-runs": "runs/history/_run_rows.html"},
        "runs/history/run_list.html",
    )
    return render(request, template, context)


# --- Exports ------------------------------------------------------------------------------

EXPORT_COLUMNS = [
    "id",
    "started_at",
    "finished_at",
    "agent",
    "status",
    "source",
    "user",
    "token",
    "thread",
    "upstream_run_id",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost",
    "cost_status",
    "duration_ms",
    "first_byte_ms",
    "overhead_ms",
    "iterations",
    "error_code",
    "error_message",
    "prompt",
    "result",
    "metadata",
    "synthetic",
]


def export_record(run: Run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "agent": run.agent,
        "status": run.status,
        "source": run.source,
        "user": run.user.get_username() if run.user else None,
        "token": run.token.name if run.token else None,
        "thread": run.upstream_thread_id or None,
        "upstream_run_id": run.upstream_run_id or None,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cached_input_tokens": run.cached_input_tokens,
        "reasoning_tokens": run.reasoning_tokens,
        "total_tokens": run.total_tokens,
        # A string keeps the exact decimal; None (not 0) when the run has no price.
        "cost": str(run.cost) if run.cost is not None else None,
        "cost_status": run.cost_status,
        "duration_ms": run.duration_ms,
        "first_byte_ms": run.first_byte_ms,
        "overhead_ms": run.overhead_ms,
        "iterations": run.iterations,
        "error_code": run.error_code or None,
        "error_message": run.error_message or None,
        "prompt": run.prompt,
        "messages": run.messages,
        "result": run.result,
        "config": run.config,
        "metadata": run.metadata,
        "synthetic": run.synthetic,
    }


class _Line:
    """csv.writer's file: hands back each written line instead of storing it."""

    def write(self, value: str) -> str:
        return value


async def _csv_lines(runs: QuerySet[Run]) -> AsyncIterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(EXPORT_COLUMNS)
    lines = []
    async for run in runs.aiterator(chunk_size=EXPORT_CHUNK):
        row = export_record(run)
        lines.append(writer.writerow([csv_cell(row[name]) for name in EXPORT_COLUMNS]))
        if len(lines) >= 500:
            yield "".join(lines)
            lines = []
    if lines:
        yield "".join(lines)


async def _json_lines(runs: QuerySet[Run]) -> AsyncIterator[str]:
    lines = []
    async for run in runs.aiterator(chunk_size=EXPORT_CHUNK):
        lines.append(json.dumps(export_record(run), ensure_ascii=False) + "\n")
        if len(lines) >= 500:
            yield "".join(lines)
            lines = []
    if lines:
        yield "".join(lines)


EXPORTS = {
    "csv": (_csv_lines, "text/csv; charset=utf-8"),
    "jsonl": (_json_lines, "application/x-ndjson; charset=utf-8"),
}


@require_GET
@team_view()
def run_export(request: TeamRequest, fmt: str) -> StreamingHttpResponse:
    """The filtered runs, newest first, streamed: rows are read in chunks as they are sent.

    The body is an async iterator over `aiterator()`: under ASGI (daphne) Django would read a
    synchronous iterator to its end before sending a byte, holding the whole export in memory.
    """
    if fmt not in EXPORTS:
        raise Http404("No such export format")
    lines, content_type = EXPORTS[fmt]
    filters = RunFilterForm(request.GET, team=request.team).filters()
    runs = (
        filters.apply(for_team(Run, request.team))
        .select_related("user", "token")
        .order_by(*NEWEST_FIRST)
    )
    record(request, "runs_exported", request.team, target=f"{fmt}: {filters.query_string()}")
    response = StreamingHttpResponse(lines(runs), content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    filename = f"runs-{request.team.slug}-{stamp}.{fmt}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


# --- One run ------------------------------------------------------------------------------


# The run's request as code: the snippets of runs.core.snippets, one generator for every panel.
Code = Snippets


def request_code(run: Run, gateway_url: str, continues_thread: bool) -> Code:
    """The run's request, to send again through rtdash's gateway with $RTDASH_TOKEN.

    Never a real key: the token is read from the environment in every version.
    """
    body: dict[str, Any] = {"agent": run.agent}
    if run.messages is not None:
        body["messages"] = run.messages
    else:
        body["prompt"] = run.prompt
    if continues_thread and run.upstream_thread_id:
        body["threadId"] = run.upstream_thread_id
    body["stream"] = run.stream
    if run.config:
        body["config"] = run.config
    if run.metadata:
        body["metadata"] = run.metadata
    return request_snippets(body, gateway_url)


def _events_context(run: Run, request: TeamRequest) -> dict[str, Any]:
    raw = request.GET.get("view") == "raw"
    context: dict[str, Any] = {"raw": raw, "stored_frames": True}
    if raw:
        try:
            after = max(0, int(request.GET.get("after", "0")))
        except ValueError:
            after = 0
        frames = list(
            run.events.filter(sequence__gt=after)
            .order_by("sequence")
            .only("sequence", "event", "data", "created_at")[: RAW_FRAMES_PAGE + 1]
        )
        more = len(frames) > RAW_FRAMES_PAGE
        frames = frames[:RAW_FRAMES_PAGE]
        context["frames"] = frames
        context["next_after"] = frames[-1].sequence if more else None
        context["stored_frames"] = bool(frames) or after > 0
    else:
        rows = run.events.order_by("sequence").values_list("sequence", "event", "data")
        context["timeline"] = build_timeline(rows.iterator(chunk_size=2000))
        context["stored_frames"] = bool(context["timeline"])
    return context


def _message_text(message: Any) -> str:
    """A `messages` entry's text: `content`, else its text parts (as RunTools reads it)."""
    if not isinstance(message, dict):
        return json.dumps(message, ensure_ascii=False)
    content = message.get("content")
    if isinstance(content, str) and content:
        return content
    parts = message.get("parts")
    if isinstance(parts, list):
        texts = [p.get("text") for p in parts if isinstance(p, dict)]
        return "\n".join(t for t in texts if isinstance(t, str))
    return json.dumps(content, ensure_ascii=False) if content is not None else ""


@require_GET
@team_view()
def run_detail(request: TeamRequest, run_id: int) -> HttpResponse:
    run = get_for_team_or_404(Run, request.team, pk=run_id)
    events = _events_context(run, request)
    template = _fragment(
        request,
        {"run-events": "runs/history/_run_events.html", "more-frames": "runs/history/_frames.html"},
        "runs/history/run_detail.html",
    )
    if template != "runs/history/run_detail.html":
        return render(request, template, {"run": run, **events})
    continues_thread = bool(run.upstream_thread_id) and (
        for_team(Run, request.team)
        .filter(upstream_thread_id=run.upstream_thread_id, started_at__lt=run.started_at)
        .exists()
    )
    gateway_url = request.build_absolute_uri(reverse("gateway_run"))
    playground = _page_url("playground", "/playground")
    messages_shown = [
        {"role": str(m.get("role", "")) if isinstance(m, dict) else "", "text": _message_text(m)}
        for m in (run.messages if isinstance(run.messages, list) else [])
    ]
    context = {
        "run": run,
        **events,
        "messages_shown": messages_shown,
        "config_json": json.dumps(run.config, indent=2, ensure_ascii=False),
        "metadata_json": json.dumps(run.metadata, indent=2, ensure_ascii=False),
        "usage_json": json.dumps(run.usage, indent=2, ensure_ascii=False) if run.usage else "",
        "code": request_code(run, gateway_url, continues_thread),
        "rerun_url": f"{playground}?{urlencode({'from_run': run.pk})}",
        "can_run": request.membership.can_run,
    }
    return render(request, template, context)


# --- Threads ------------------------------------------------------------------------------


@require_GET
@team_view()
def thread_list(request: TeamRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()[:200]
    show = request.GET.get("show", "active")
    if show not in conversation.SHOW_CHOICES:
        show = "active"
    cursor = conversation.ThreadCursor.decode(request.GET.get("before"))
    page = conversation.thread_page(
        request.team,
        search=search,
        show=show,
        cursor=cursor,
        agents=team_agents(request.team),
    )
    query = urlencode({k: v for k, v in (("q", search), ("show", show)) if v})
    context = {
        "page": page,
        "search": search,
        "show": show,
        "query": query,
        "more_url": f"?{query}&before={page.next_cursor}" if page.next_cursor else "",
    }
    template = _fragment(
        request,
        {
            "thread-table": "runs/history/_thread_table.html",
            "more-threads": "runs/history/_thread_rows.html",
        },
        "runs/history/thread_list.html",
    )
    return render(request, template, context)


@dataclass
class ThreadView:
    """What the thread page knows about one thread, from rtdash and from RunTools."""

    upstream_id: str
    record: Thread | None
    runs: list[Run]
    upstream: conversation.UpstreamThreadDetail

    @property
    def agent(self) -> str:
        if self.record is not None:
            return self.record.agent
        if self.runs:
            return self.runs[0].agent
        thread = self.upstream.thread or {}
        return str(thread.get("agentId") or thread.get("agent") or "")

    @property
    def title(self) -> str:
        thread = self.upstream.thread or {}
        upstream_title = thread.get("title")
        if isinstance(upstream_title, str) and upstream_title:
            return upstream_title
        return self.record.title if self.record is not None else ""

    @property
    def archived(self) -> bool:
        thread = self.upstream.thread or {}
        if isinstance(thread.get("archived"), bool):
            return thread["archived"]
        return self.record.archived if self.record is not None else False


def _known_here(request: TeamRequest, thread_id: str) -> bool:
    """Whether rtdash has a record of this thread or of any run in it, for this team."""
    return (
        for_team(Thread, request.team).filter(upstream_id=thread_id).exists()
        or for_team(Run, request.team).filter(upstream_thread_id=thread_id).exists()
    )


def _thread_or_404(request: TeamRequest, thread_id: str) -> ThreadView:
    """The team's view of a thread; 404 when neither rtdash nor the team's key knows it."""
    record_ = for_team(Thread, request.team).filter(upstream_id=thread_id).first()
    runs = list(conversation.thread_runs(request.team, thread_id))
    detail = conversation.UpstreamThreadDetail()
    if record_ is None or record_.deleted_at is None:
        detail = conversation.fetch_thread(request.team, thread_id)
    if record_ is None and not runs and not detail.found:
        raise Http404("No such thread")
    return ThreadView(thread_id, record_, runs, detail)


@require_GET
@team_view()
def thread_detail(request: TeamRequest, thread_id: str) -> HttpResponse:
    view = _thread_or_404(request, thread_id)
    turns = conversation.build_turns(view.runs, view.upstream.events)
    recorded = [turn for turn in turns if turn.recorded]
    playground = _page_url("playground", "/playground")
    context = {
        "thread": view,
        "turns": turns,
        "recorded_turns": len(recorded),
        "outside_turns": len(turns) - len(recorded),
        "total": turns[-1] if turns else None,
        "climb": conversation.climbing_input(turns),
        "continue_url": f"{playground}?{urlencode({'thread': thread_id, 'agent': view.agent})}",
        "runs_url": f"{reverse('run_list')}?{urlencode({'thread': thread_id})}",
        "can_run": request.membership.can_run,
        "deleted": view.record is not None and view.record.deleted_at is not None,
    }
    return render(request, "runs/history/thread_detail.html", context)


@dataclass
class UpstreamChange:
    done: bool
    problem: str = ""
    not_found: bool = False


def _change_upstream(
    request: TeamRequest, method: str, thread_id: str, body: dict | None = None
) -> UpstreamChange:
    """Send a PATCH or DELETE for the thread with the team's key."""
    try:
        key = conversation.team_key(request.team)
    except conversation.NoKey as problem:
        return UpstreamChange(False, str(problem))
    content = json.dumps(body).encode() if body is not None else None
    try:
        response = async_to_sync(upstream.call)(
            key, method, conversation.thread_path(thread_id), content=content
        )
    except upstream.UpstreamError as error:
        return UpstreamChange(False, f"RunTools could not be reached: {error.message}.")
    if response.status_code in (200, 202, 204):
        return UpstreamChange(True)
    refusal = conversation.describe_refusal(response)
    return UpstreamChange(
        False, f"RunTools refused ({refusal}).", not_found=response.status_code == 404
    )


def _change_or_404(request: TeamRequest, thread_id: str, body: dict) -> UpstreamChange:
    change = _change_upstream(request, "PATCH", thread_id, body)
    if not change.done and not _known_here(request, thread_id):
        # Neither rtdash nor the team's key knows it: as unknown as any other team's id.
        raise Http404("No such thread")
    if change.done:
        for_team(Thread, request.team).filter(upstream_id=thread_id).update(**body)
    return change


@require_POST
@team_view(run=True)
def thread_rename(request: TeamRequest, thread_id: str) -> HttpResponse:
    title = " ".join(request.POST.get("title", "").split())
    if not title or len(title) > TITLE_MAX:
        if not _known_here(request, thread_id):
            raise Http404("No such thread")
        messages.error(request, f"A title is 1 to {TITLE_MAX} characters.")
        return redirect("thread_detail", thread_id=thread_id)
    change = _change_or_404(request, thread_id, {"title": title})
    if change.done:
        record(request, "thread_renamed", request.team, target=f"thread {thread_id}")
        messages.success(request, "Thread renamed.")
    else:
        messages.error(request, f"Not renamed: {change.problem}")
    return redirect("thread_detail", thread_id=thread_id)


@require_POST
@team_view(run=True)
def thread_archive(request: TeamRequest, thread_id: str) -> HttpResponse:
    archived = request.POST.get("archived") != "false"
    change = _change_or_404(request, thread_id, {"archived": archived})
    if change.done:
        action = "thread_archived" if archived else "thread_unarchived"
        record(request, action, request.team, target=f"thread {thread_id}")
        messages.success(request, "Thread archived." if archived else "Thread restored.")
    else:
        messages.error(request, f"Not changed: {change.problem}")
    return redirect("thread_detail", thread_id=thread_id)


@require_http_methods(["GET", "POST"])
@team_view(run=True)
def thread_delete(request: TeamRequest, thread_id: str) -> HttpResponse:
    """GET asks for confirmation; POST deletes upstream, then forgets the content here."""
    if request.method == "GET":
        view = _thread_or_404(request, thread_id)
        context = {"thread": view, "run_count": len(view.runs)}
        return render(request, "runs/history/thread_delete.html", context)
    known = _known_here(request, thread_id)
    change = _change_upstream(request, "DELETE", thread_id)
    if not change.done and not known:
        raise Http404("No such thread")
    if not change.done and not change.not_found:
        messages.error(request, f"Nothing was deleted: {change.problem}")
        return redirect("thread_detail", thread_id=thread_id)
    # Deleted upstream now, or already gone there: either way its content goes here too.
    cleared = conversation.forget_thread_content(request.team, thread_id)
    record(
        request,
        "thread_deleted",
        request.team,
        target=f"thread {thread_id}: content of {cleared} runs removed, usage kept",
    )
    text = f"Thread deleted. The content of its {cleared} recorded runs was removed; "
    text += "their usage and cost still count in reports."
    if not change.done:
        text += " (RunTools had already deleted it.)"
    messages.success(request, text)
    return redirect("thread_list")
