"""Budgets: the page that shows each budget against this month's spend, and setting and
deleting one. Whether a run may start is decided in runs.pipeline.budgets."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from runs.core.access import for_team, get_for_team_or_404, team_view
from runs.core.agents import team_agents as runtools_agents
from runs.core.audit import record
from runs.models import Budget, DailyUsage, GatewayToken, Run, Team
from runs.pipeline.budgets import budget_statuses, money, note_alerts
from runs.reports.sections import changed_section, known_agents


def agent_is_known(team: Team, agent: str) -> bool:
    """Whether a run of the team or RunTools' list of agents (the playground's, cached) has
    `agent`: a budget for any other name would never be spent against."""
    # The daily rollup holds every finished run's agent; a first run still going is in Run.
    if for_team(DailyUsage, team).filter(agent=agent).exists():
        return True
    if for_team(Run, team).filter(agent=agent).exists():
        return True
    agents, _from_upstream = runtools_agents(team)
    return any(listed.slug == agent for listed in agents)


class BudgetForm(forms.ModelForm):
    # Set by the warning about an agent nobody knows: saving again with it confirms the name.
    confirm_agent = forms.CharField(required=False, max_length=200, widget=forms.HiddenInput)

    class Meta:
        model = Budget
        fields = ["agent", "user", "token", "monthly_limit", "warn_percent", "hard_stop"]
        labels = {
            "agent": "Agent",
            "user": "Member",
            "token": "Gateway token",
            "monthly_limit": "Monthly limit ($)",
            "warn_percent": "Warn at (% of the limit)",
            "hard_stop": "Hard stop: refuse new runs once the limit is reached",
        }
        help_texts = {
            "agent": "Blank: the whole team. Setting a budget for a scope replaces its old one.",
            "user": "Or one member: the runs they start in the playground and in experiments.",
            "token": "Or one gateway token: the runs made with it.",
        }

    def __init__(self, *args, team: Team, **kwargs) -> None:
        kwargs.setdefault("auto_id", "budget_%s")
        super().__init__(*args, **kwargs)
        self.team = team
        self.fields["agent"].widget.attrs["list"] = "known-agents"
        # Only this team's members and tokens can be chosen: any other id is "not one of the
        # available choices", a form error.
        self.fields["user"].queryset = (
            get_user_model().objects.filter(memberships__team=team).order_by("username")
        )
        self.fields["user"].label_from_instance = lambda user: user.get_username()
        self.fields["token"].queryset = (
            for_team(GatewayToken, team).filter(revoked_at__isnull=True).order_by("name", "pk")
        )
        self.fields["monthly_limit"].widget.attrs.update({"min": "0.01", "step": "0.01"})
        self.fields["warn_percent"].widget.attrs.update({"min": "1", "max": "100"})

    def validate_unique(self) -> None:
        pass  # a budget for an existing scope replaces it (see budget_set)

    def clean_agent(self) -> str:
        return self.cleaned_data["agent"].strip()

    def clean(self):
        data = super().clean()
        scopes = [name for name in ("agent", "user", "token") if data.get(name)]
        if len(scopes) > 1:
            raise forms.ValidationError(
                "Choose one of agent, member or token, or none for the team."
            )
        return data

    def clean_monthly_limit(self):
        limit = self.cleaned_data["monthly_limit"]
        if limit is not None and limit <= 0:
            raise forms.ValidationError("The limit must be more than $0.")
        return limit

    def clean_warn_percent(self):
        percent = self.cleaned_data["warn_percent"]
        if percent is not None and not 1 <= percent <= 100:
            raise forms.ValidationError("Warn at a share between 1% and 100%.")
        return percent


def _budgets_context(request: HttpRequest, form: BudgetForm | None = None) -> dict:
    statuses = budget_statuses(request.team)
    return {
        "statuses": statuses,
        "form": form or BudgetForm(team=request.team),
        "can_manage": request.membership.can_manage,
        "known_agents": known_agents(request.team),
        "budgets": [s for s in statuses if s.level != "ok"],
    }


@require_GET
@team_view()
def budgets(request: HttpRequest) -> HttpResponse:
    context = _budgets_context(request)
    note_alerts(request.team, context["statuses"])
    return render(request, "runs/reports/budgets.html", context)


@require_POST
@team_view(manage=True)
def budget_set(request: HttpRequest) -> HttpResponse:
    form = BudgetForm(request.POST, team=request.team)
    if not form.is_valid():
        context = _budgets_context(request, form)
        template = "runs/reports/_budgets.html" if request.htmx else "runs/reports/budgets.html"
        return render(request, template, context, status=400)
    data = form.cleaned_data
    if (
        data["agent"]
        and data["confirm_agent"] != data["agent"]
        and not agent_is_known(request.team, data["agent"])
    ):
        # Warn before saving: a mistyped name would make a budget that never counts a run.
        confirming = BudgetForm(
            {**request.POST.dict(), "confirm_agent": data["agent"]}, team=request.team
        )
        confirming.is_valid()
        context = _budgets_context(request, confirming)
        context["agent_warning"] = (
            f"No run of this team and no RunTools agent is named “{data['agent']}”: a budget "
            "for it would count nothing. Check the name, or save again to keep it."
        )
        template = "runs/reports/_budgets.html" if request.htmx else "runs/reports/budgets.html"
        return render(request, template, context)
    budget, _created = Budget.objects.update_or_create(
        team=request.team,
        agent=data["agent"],
        user=data["user"],
        token=data["token"],
        defaults={
            "monthly_limit": data["monthly_limit"],
            "warn_percent": data["warn_percent"],
            "hard_stop": data["hard_stop"],
            "updated_by": request.user,
            "updated_at": timezone.now(),
        },
    )
    # A raised limit may no longer be crossed this month: let its alerts fire again.
    budget.alerts.all().delete()
    scope = budget.scope_label
    stop = ", hard stop" if budget.hard_stop else ""
    limit = f"{money(budget.monthly_limit)}/month, warn at {budget.warn_percent}%{stop}"
    record(request, "budget_set", request.team, target=f"{scope}: {limit}")
    context = _budgets_context(request)
    context["notice"] = f"Saved the {scope} budget: {limit}."
    return changed_section(request, "runs/reports/_budgets.html", context, "budgets")


@require_POST
@team_view(manage=True)
def budget_delete(request: HttpRequest, budget_id: int) -> HttpResponse:
    budget = get_for_team_or_404(Budget, request.team, pk=budget_id)
    scope = budget.scope_label
    record(request, "budget_deleted", request.team, target=f"{scope} budget")
    budget.delete()
    context = _budgets_context(request)
    context["notice"] = f"Deleted the {scope} budget."
    return changed_section(request, "runs/reports/_budgets.html", context, "budgets")
