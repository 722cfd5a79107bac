"""Run history: the runs list and one run (its details, timeline and raw frames).

The exports of the list are in runs.history.exports, threads in runs.history.thread_views.
Upstream content (prompts, results, tool output, metadata, frames) is only ever put into
templates as text, which Django escapes; nothing here marks anything safe.
"""

from __future__ import annotations

import json
from typing import Any

from django.db.models import QuerySet
from django.db.models.functions import Substr
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from runs.core.access import TeamRequest, for_team, get_for_team_or_404, team_view
from runs.core.snippets import Snippets, request_snippets
from runs.history import filters as filters_module
from runs.history.filters import Cursor, RunFilterForm, page_of, scan_floor
from runs.history.fragments import template_for
from runs.history.timeline import build_timeline
from runs.models import Run

RAW_FRAMES_PAGE = 200


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
    template = template_for(
        request,
        {"run-table": "runs/history/_run_table.html", "more-runs": "runs/history/_run_rows.html"},
        "runs/history/run_list.html",
    )
    return render(request, template, context)


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
    template = template_for(
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
    playground = reverse("playground")
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
