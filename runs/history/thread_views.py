"""The threads list and one thread, turn by turn; renaming, archiving and deleting a thread.

Thread ids are the upstream's and opaque. A thread neither rtdash nor the team's key knows is a
404, as unknown as any other team's. Upstream content is only ever put into templates as text,
which Django escapes; nothing here marks anything safe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from runs.core import upstream
from runs.core.access import TeamRequest, for_team, team_view
from runs.core.audit import record
from runs.core.validation import DOT_SEGMENTS
from runs.history import thread_list as listing
from runs.history import threads as conversation
from runs.history.filters import team_agents
from runs.history.fragments import template_for
from runs.models import Run, Thread
from runs.pipeline.recording import storable

TITLE_MAX = 200


@require_GET
@team_view()
def thread_list(request: TeamRequest) -> HttpResponse:
    # As stored: a NUL (which PostgreSQL cannot compare) is U+FFFD in every stored title.
    search = storable(request.GET.get("q", "").strip()[:200])
    show = request.GET.get("show", "active")
    if show not in listing.SHOW_CHOICES:
        show = "active"
    cursor = listing.ThreadCursor.decode(request.GET.get("before"))
    page = listing.thread_page(
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
    template = template_for(
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


def _named_or_404(thread_id: str) -> None:
    """404 for an id that names no thread: `.` and `..` are path steps (sent upstream, they
    would reach another path), and no stored id holds a NUL (nor can PostgreSQL compare one)."""
    if thread_id in DOT_SEGMENTS or "\x00" in thread_id:
        raise Http404("No such thread.")


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
    _named_or_404(thread_id)
    view = _thread_or_404(request, thread_id)
    turns = conversation.build_turns(view.runs, view.upstream.events)
    recorded = [turn for turn in turns if turn.recorded]
    playground = reverse("playground")
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
    _named_or_404(thread_id)
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
    _named_or_404(thread_id)
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
    _named_or_404(thread_id)
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
