"""Reports, their CSV and JSON, prices and budgets: pages for people and /api/usage for scripts.

Every view reaches team data through runs.core.access (the session's team) or an rtdash token's
team; nothing is fetched by id alone. Pages work without JavaScript; with htmx, the report
form swaps just the report, and the prices and budgets forms just their section.
"""

from __future__ import annotations

import csv
from decimal import Decimal

from django import forms
from django.contrib import messages
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_GET, require_POST

from runs.core.access import current_membership, for_team, get_for_team_or_404, team_view
from runs.core.audit import record
from runs.core.errors import GatewayError, error_response
from runs.core.spreadsheet import csv_cell
from runs.core.validation import (
    MAX_TOKENS_RANGE,
    MAX_TURNS_RANGE,
    InvalidRequest,
    parse_query_int,
)
from runs.gateway.auth import check_rate, credential
from runs.models import Budget, DailyUsage, GatewayToken, Price, Team, hash_token
from runs.pipeline.budgets import budget_statuses, estimate_run, money, note_alerts
from runs.reports.charts import bar_chart, stacked_spend_chart
from runs.reports.queries import GROUPS, PERIODS, InvalidPeriod, Report, make_period, usage_report

CSV_COLUMNS = (
    "key", "label", "runs", "completed", "failed", "inputTokens", "outputTokens",
    "cachedInputTokens", "reasoningTokens", "cost", "unpricedRuns", "partialRuns",
    "durationP50Ms", "durationP95Ms", "firstFrameP50Ms", "firstFrameP95Ms", "avgIterations",
    "maxTurnsHitShare",
)  # fmt: skip


def _report_from(request: HttpRequest, team: Team) -> tuple[Report | None, str, dict]:
    """The report the query string asks for, or (None, error) for a bad query."""
    query = {
        "period": request.GET.get("period", "") or ("custom" if request.GET.get("since") else ""),
        "since": request.GET.get("since", ""),
        "until": request.GET.get("until", ""),
        "group_by": request.GET.get("group_by", "") or "agent",
    }
    if query["group_by"] not in GROUPS:
        return None, f"group_by must be one of {', '.join(GROUPS)}.", query
    try:
        period = make_period(query["period"] or "30d", query["since"], query["until"])
    except InvalidPeriod as problem:
        return None, str(problem), query
    query["period"] = period.key
    if period.key == "custom":
        query["since"], query["until"] = period.since.isoformat(), period.until.isoformat()
    return usage_report(team, period, query["group_by"]), "", query


def _query_string(query: dict, **changes) -> str:
    from urllib.parse import urlencode

    merged = {**query, **changes}
    if merged.get("period") != "custom":
        merged.pop("since", None)
        merged.pop("until", None)
    return urlencode({name: value for name, value in merged.items() if value})


@require_GET
@team_view()
def reports(request: HttpRequest) -> HttpResponse:
    report, error, query = _report_from(request, request.team)
    context = {
        "report": report,
        "error": error,
        "query": query,
        "periods": PERIODS,
        "groups": GROUPS,
        "export_query": _query_string(query),
        "period_links": {key: _query_string(query, period=key) for key in PERIODS},
        "group_links": {key: _query_string(query, group_by=key) for key in GROUPS},
    }
    if report is not None:
        context["spend_chart"] = stacked_spend_chart(report.spend)
        bars = [(row.label, row.cost) for row in report.rows if row.cost > 0][:15]
        context["group_chart"] = bar_chart(bars, label=f"Spend by {report.group_by}")
        context["run_list_url"] = _reverse_or_none("run_list")
        context["budgets"] = _banner_statuses(request)
    status = 400 if error else 200
    template = "runs/reports/_report.html" if request.htmx else "runs/reports/reports.html"
    return render(request, template, context, status=status)


def _reverse_or_none(name: str, *args) -> str | None:
    from django.urls import NoReverseMatch

    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def _banner_statuses(request: HttpRequest):
    """Budgets at or past their warning threshold, for the banner (and their audit event)."""
    statuses = budget_statuses(request.team)
    note_alerts(request.team, statuses)
    return [status for status in statuses if status.level != "ok"]


@require_GET
@team_view()
def report_export(request: HttpRequest) -> HttpResponse:
    report, error, _query = _report_from(request, request.team)
    if report is None:
        return HttpResponse(error, status=400, content_type="text/plain; charset=utf-8")
    name = (
        f"rtdash-{request.team.slug}-by-{report.group_by}-"
        f"{report.period.since:%Y%m%d}-{report.period.until:%Y%m%d}.csv"
    )
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    for row in [*report.rows, report.totals]:
        values = row.as_dict()
        if row is report.totals:
            values["key"], values["label"] = "", "TOTAL"
        writer.writerow([csv_cell(values[column]) for column in CSV_COLUMNS])
    return response


# --- /api/usage -----------------------------------------------------------------------------


def _token_team(request: HttpRequest) -> Team | None:
    """The team of the rtdash token on the request; None when there is none.

    Uses the gateway's own credential parsing (X-API-Key or Authorization: Bearer) and rate
    limit. Unlike a gateway call, reading usage needs no RunTools key.
    """
    plaintext = credential(request)
    if not plaintext:
        return None
    token = (
        GatewayToken.objects.select_related("team").filter(token_hash=hash_token(plaintext)).first()
    )
    if token is None or not token.is_usable():
        raise GatewayError(401, "invalid_token", "The token is unknown, revoked or expired.")
    check_rate(token.pk, token.requests_per_minute)
    return token.team


@require_GET
def api_usage(request: HttpRequest) -> HttpResponse:
    """`GET /api/usage?group_by=&since=&until=`: a report as JSON, for a session or a token."""
    try:
        team = _token_team(request)
    except GatewayError as problem:
        response = error_response(problem.status, problem.code, problem.message)
        for name, value in problem.headers.items():
            response[name] = value
        return response
    if team is None:
        membership = current_membership(request)
        if membership is None:
            if request.user.is_authenticated:
                return error_response(404, "not_found", "You are not a member of any team.")
            return error_response(
                401, "unauthorized", "Log in, or send an rtdash token in X-API-Key."
            )
        team = membership.team
    report, error, _query = _report_from(request, team)
    if report is None:
        return error_response(400, "bad_request", error)
    body = {"data": report.as_dict(), "meta": {"currency": "USD"}}
    return JsonResponse(body)


# --- Prices ---------------------------------------------------------------------------------


class PriceForm(forms.ModelForm):
    class Meta:
        model = Price
        fields = [
            "agent",
            "effective_from",
            "input_per_million",
            "output_per_million",
            "cached_input_per_million",
            "reasoning_per_million",
        ]
        labels = {
            "agent": "Agent",
            "effective_from": "In force from",
            "input_per_million": "Input $ / 1M tokens",
            "output_per_million": "Output $ / 1M tokens",
            "cached_input_per_million": "Cached input $ / 1M tokens",
            "reasoning_per_million": "Reasoning $ / 1M tokens",
        }
        help_texts = {
            "agent": "Blank: the team default, for every agent without its own price.",
            "effective_from": "Runs started on or after this day (UTC) use this price.",
            "cached_input_per_million": "Blank: the input price.",
            "reasoning_per_million": "Blank: the output price.",
        }
        widgets = {"effective_from": forms.DateInput(attrs={"type": "date"})}

    def __init__(self, *args, team: Team, **kwargs) -> None:
        kwargs.setdefault("auto_id", "price_%s")
        super().__init__(*args, **kwargs)
        self.team = team
        self.fields["agent"].widget.attrs["list"] = "known-agents"
        if not self.is_bound:
            self.fields["effective_from"].initial = timezone.now().date()
        for name in (
            "input_per_million",
            "output_per_million",
            "cached_input_per_million",
            "reasoning_per_million",
        ):
            self.fields[name].min_value = Decimal(0)
            self.fields[name].widget.attrs.update({"min": "0", "step": "0.001"})
            self.fields[name].validators.append(_not_negative)

    def clean_agent(self) -> str:
        return self.cleaned_data["agent"].strip()

    def clean(self):
        cleaned = super().clean()
        agent, since = cleaned.get("agent"), cleaned.get("effective_from")
        if since and Price.objects.filter(team=self.team, agent=agent, effective_from=since):
            self.add_error(
                "effective_from",
                "This agent already has a price from that day; delete it first to replace it.",
            )
        return cleaned


def _not_negative(value) -> None:
    if value is not None and value < 0:
        raise forms.ValidationError("A price cannot be negative.")


def _known_agents(team: Team) -> list[str]:
    agents = set(for_team(DailyUsage, team).values_list("agent", flat=True).distinct())
    agents |= set(for_team(Price, team).exclude(agent="").values_list("agent", flat=True))
    agents |= set(for_team(Budget, team).exclude(agent="").values_list("agent", flat=True))
    return sorted(agents)


def _describe_price(price: Price) -> str:
    scope = f"agent {price.agent}" if price.agent else "team default"
    return (
        f"{scope} from {price.effective_from}: input ${price.input_per_million}/M, "
        f"output ${price.output_per_million}/M, cached ${price.cached_rate}/M, "
        f"reasoning ${price.reasoning_rate}/M"
    )


def _prices_context(request: HttpRequest, form: PriceForm | None = None) -> dict:
    team = request.team
    return {
        "prices": for_team(Price, team)
        .select_related("created_by")
        .order_by("agent", "-effective_from"),
        "form": form or PriceForm(team=team),
        "can_manage": request.membership.can_manage,
        "known_agents": _known_agents(team),
        "today": timezone.now().date(),
    }


@require_GET
@team_view()
def prices(request: HttpRequest) -> HttpResponse:
    return render(request, "runs/reports/prices.html", _prices_context(request))


def _section(request: HttpRequest, template: str, context: dict, page: str) -> HttpResponse:
    """After a change: the section for htmx, else a redirect back to the page (PRG)."""
    if request.htmx:
        return render(request, template, context)
    messages.success(request, context["notice"])
    return redirect(page)


@require_POST
@team_view(manage=True)
def price_add(request: HttpRequest) -> HttpResponse:
    form = PriceForm(request.POST, team=request.team)
    if not form.is_valid():
        context = _prices_context(request, form)
        template = "runs/reports/_prices.html" if request.htmx else "runs/reports/prices.html"
        return render(request, template, context, status=400)
    price = form.save(commit=False)
    price.team, price.created_by = request.team, request.user
    try:
        price.save()
    except IntegrityError:
        form.add_error("effective_from", "This agent already has a price from that day.")
        return render(request, "runs/reports/prices.html", _prices_context(request, form), 400)
    record(request, "price_set", request.team, target=_describe_price(price))
    note = "Price saved. It applies to runs that finish from now on"
    if price.effective_from <= timezone.now().date():
        note += (
            f"; runs already finished keep their cost until `manage.py recompute_costs "
            f"--since {price.effective_from}` re-prices them"
        )
    context = _prices_context(request)
    context["notice"] = note + "."
    return _section(request, "runs/reports/_prices.html", context, "prices")


@require_POST
@team_view(manage=True)
def price_delete(request: HttpRequest, price_id: int) -> HttpResponse:
    price = get_for_team_or_404(Price, request.team, pk=price_id)
    record(request, "price_deleted", request.team, target=_describe_price(price))
    price.delete()
    context = _prices_context(request)
    context["notice"] = "Price deleted."
    return _section(request, "runs/reports/_prices.html", context, "prices")


# --- Budgets --------------------------------------------------------------------------------


class BudgetForm(forms.ModelForm):
    class Meta:
        model = Budget
        fields = ["agent", "monthly_limit", "warn_percent", "hard_stop"]
        labels = {
            "agent": "Agent",
            "monthly_limit": "Monthly limit ($)",
            "warn_percent": "Warn at (% of the limit)",
            "hard_stop": "Hard stop: refuse new runs once the limit is reached",
        }
        help_texts = {
            "agent": "Blank: the whole team. Setting a budget for a scope replaces its old one.",
        }

    def __init__(self, *args, team: Team, **kwargs) -> None:
        kwargs.setdefault("auto_id", "budget_%s")
        super().__init__(*args, **kwargs)
        self.team = team
        self.fields["agent"].widget.attrs["list"] = "known-agents"
        self.fields["monthly_limit"].widget.attrs.update({"min": "0.01", "step": "0.01"})
        self.fields["warn_percent"].widget.attrs.update({"min": "1", "max": "100"})

    def validate_unique(self) -> None:
        pass  # a budget for an existing scope replaces it (see budget_set)

    def clean_agent(self) -> str:
        return self.cleaned_data["agent"].strip()

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
        "known_agents": _known_agents(request.team),
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
    budget, _created = Budget.objects.update_or_create(
        team=request.team,
        agent=data["agent"],
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
    scope = f"agent {budget.agent}" if budget.agent else "team"
    stop = ", hard stop" if budget.hard_stop else ""
    limit = f"{money(budget.monthly_limit)}/month, warn at {budget.warn_percent}%{stop}"
    record(request, "budget_set", request.team, target=f"{scope}: {limit}")
    context = _budgets_context(request)
    context["notice"] = "Budget saved."
    return _section(request, "runs/reports/_budgets.html", context, "budgets")


@require_POST
@team_view(manage=True)
def budget_delete(request: HttpRequest, budget_id: int) -> HttpResponse:
    budget = get_for_team_or_404(Budget, request.team, pk=budget_id)
    scope = f"agent {budget.agent}" if budget.agent else "team"
    record(request, "budget_deleted", request.team, target=f"{scope} budget")
    budget.delete()
    context = _budgets_context(request)
    context["notice"] = "Budget deleted."
    return _section(request, "runs/reports/_budgets.html", context, "budgets")


# --- Before a run ---------------------------------------------------------------------------


def _int_param(request: HttpRequest, name: str, bounds: tuple[int, int]) -> int | None:
    """The parameter as a bounded integer, None when absent. Raises InvalidRequest."""
    value = request.GET.get(name, "").strip()
    return parse_query_int(value, name, *bounds) if value else None


@require_GET
@team_view()
def run_estimate(request: HttpRequest) -> HttpResponse:
    """The estimate fragment for the playground: `?agent=&maxTurns=&maxTokens=`."""
    agent = request.GET.get("agent", "").strip()[:200]
    try:
        config = {
            name: value
            for name, bounds in (("maxTurns", MAX_TURNS_RANGE), ("maxTokens", MAX_TOKENS_RANGE))
            if (value := _int_param(request, name, bounds)) is not None
        }
    except InvalidRequest as problem:
        # Same place in the page as the estimate, saying what to fix.
        fragment = '<div class="run-estimate" id="run-estimate"><p class="muted">{}</p></div>'
        return HttpResponse(format_html(fragment, problem.message), status=400)
    estimate = estimate_run(request.team, agent, config) if agent else None
    return render(request, "runs/reports/_run_estimate.html", {"estimate": estimate})
