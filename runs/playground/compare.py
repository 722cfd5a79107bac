"""Compare side by side: one prompt, two to four columns, each its own agent and config.

With JavaScript, static/compare.js starts every column at once, each over its own run socket
(a socket follows one run), and streams each into its own log region. Without it, the form
posts here and every column is run (not streamed) at the same time, then shown. Either way
each column is a recorded playground run, checked by the playground form's own rules. The
comparison's settings are in the page's address (GET parameters), so it can be shared.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django.http import HttpResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils.datastructures import MultiValueDict
from django.views.decorators.http import require_http_methods

from runs.core.access import TeamRequest, team_view
from runs.core.agents import team_agents
from runs.core.crypto import KeyDecryptionError
from runs.core.validation import RunRequest
from runs.models import Run, Team
from runs.pipeline.budgets import BudgetExceeded
from runs.pipeline.start import NoRunToolsKey
from runs.playground.forms import InvalidRun, PlaygroundForm, build_run_request
from runs.playground.markdown import render_markdown
from runs.playground.run_summary import error_text, refusal
from runs.playground.views import run_to_end

MIN_COLUMNS = 2
MAX_COLUMNS = 4
CONFIG_FIELDS = ("max_tokens", "max_turns", "temperature")
MAX_PROMPT_CHARS = 32_000


@dataclass
class Column:
    number: int
    agent: str = ""
    max_tokens: str = ""
    max_turns: str = ""
    temperature: str = ""
    errors: dict[str, list[str]] = field(default_factory=dict)
    run: Run | None = None
    problem: str = ""

    @property
    def answer_html(self):
        return render_markdown(self.run.result) if self.run is not None else ""

    @property
    def error(self) -> str:
        return error_text(self.run) if self.run is not None else ""

    def form_data(self, prompt: str) -> MultiValueDict:
        data = MultiValueDict({"agent": [self.agent], "prompt": [prompt]})
        data["input_mode"] = "prompt"
        for name in CONFIG_FIELDS:
            data[name] = getattr(self, name)
        return data


def _columns(data: QueryDict) -> list[Column]:
    agents = data.getlist("agent")[:MAX_COLUMNS]
    count = max(MIN_COLUMNS, len(agents))
    values = {name: data.getlist(name)[:MAX_COLUMNS] for name in CONFIG_FIELDS}
    columns = []
    for index in range(count):
        column = Column(number=index + 1, agent=agents[index][:200] if index < len(agents) else "")
        for name in CONFIG_FIELDS:
            if index < len(values[name]):
                setattr(column, name, values[name][index][:40])
        columns.append(column)
    return columns


def share_query(prompt: str, columns: list[Column]) -> str:
    """The GET parameters that open this comparison again."""
    pairs = [("prompt", prompt)]
    for column in columns:
        pairs += [("agent", column.agent)]
        pairs += [(name, getattr(column, name)) for name in CONFIG_FIELDS]
    return urlencode(pairs)


async def _run_columns(team: Team, requests: list[RunRequest], user) -> list[Run | Exception]:
    return await asyncio.gather(
        *(run_to_end(team, request, user) for request in requests), return_exceptions=True
    )


def _run_all(request: TeamRequest, prompt: str, columns: list[Column]) -> None:
    ready: list[tuple[Column, RunRequest]] = []
    for column in columns:
        try:
            run_request, _body = build_run_request(column.form_data(prompt))
        except InvalidRun as problem:
            column.errors = problem.errors
        else:
            ready.append((column, run_request))
    if len(ready) != len(columns):
        return  # nothing runs until every column is right, as with "Run all" in the page
    outcomes = async_to_sync(_run_columns)(
        request.team, [run_request for _column, run_request in ready], request.user
    )
    for (column, _request), outcome in zip(ready, outcomes, strict=True):
        if isinstance(outcome, BudgetExceeded | NoRunToolsKey | KeyDecryptionError):
            column.problem = refusal(outcome)[1]
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            column.run = outcome


@require_http_methods(["GET", "POST"])
@team_view()
def compare(request: TeamRequest) -> HttpResponse:
    data = request.POST if request.method == "POST" else request.GET
    prompt = data.get("prompt", "")[:MAX_PROMPT_CHARS]
    columns = _columns(data)
    action = data.get("action", "")
    status = 200
    prompt_error = ""
    if request.method == "POST":
        if action == "add" and len(columns) < MAX_COLUMNS:
            columns.append(Column(number=len(columns) + 1))
        elif action.startswith("remove-") and len(columns) > MIN_COLUMNS:
            number = action.removeprefix("remove-")
            columns = [column for column in columns if str(column.number) != number]
            for index, column in enumerate(columns, start=1):
                column.number = index
        elif not request.membership.can_run:
            status, prompt_error = 403, "You are a viewer of this team: you cannot start runs."
        elif not prompt.strip():
            status, prompt_error = 400, "Write a prompt."
        else:
            _run_all(request, prompt, columns)
            if any(column.errors for column in columns):
                status = 400
    agents, _from_upstream = team_agents(request.team)
    context = {
        "prompt": prompt,
        "prompt_error": prompt_error,
        "columns": columns,
        "agents": agents,
        "can_run": request.membership.can_run,
        "can_add": len(columns) < MAX_COLUMNS,
        "can_remove": len(columns) > MIN_COLUMNS,
        "max_columns": MAX_COLUMNS,
        "share_url": f"{reverse('playground_compare')}?{share_query(prompt, columns)}",
        "fields": PlaygroundForm.base_fields,
    }
    return render(request, "runs/playground/compare.html", context, status=status)
