"""What the prices and budgets pages share: the agents a form suggests, and the answer
after a change (the changed section for htmx, else a redirect back to the page)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from runs.core.access import for_team
from runs.models import Budget, DailyUsage, Price, Team


def known_agents(team: Team) -> list[str]:
    """Agents the team has run or priced or budgeted, for the forms' suggestions."""
    agents = set(for_team(DailyUsage, team).values_list("agent", flat=True).distinct())
    agents |= set(for_team(Price, team).exclude(agent="").values_list("agent", flat=True))
    agents |= set(for_team(Budget, team).exclude(agent="").values_list("agent", flat=True))
    return sorted(agents)


def changed_section(request: HttpRequest, template: str, context: dict, page: str) -> HttpResponse:
    """After a change: the section for htmx, else a redirect back to the page (PRG)."""
    if request.htmx:
        return render(request, template, context)
    messages.success(request, context["notice"])
    return redirect(page)
