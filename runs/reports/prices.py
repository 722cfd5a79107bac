"""Prices: the page that lists a team's prices per agent, and adding and deleting one.

A price applies to runs that finish from the day it is in force; runs already finished keep
their cost until `manage.py recompute_costs` re-prices them.
"""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from runs.core.access import for_team, get_for_team_or_404, team_view
from runs.core.audit import record
from runs.core.days import local_today
from runs.models import Price, Team
from runs.reports.sections import changed_section, known_agents


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
            "effective_from": "Runs started on or after this day (the team's time) use it.",
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
            self.fields["effective_from"].initial = local_today(team.zone)
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
        "known_agents": known_agents(team),
        "today": local_today(team.zone),
    }


@require_GET
@team_view()
def prices(request: HttpRequest) -> HttpResponse:
    return render(request, "runs/reports/prices.html", _prices_context(request))


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
    if price.effective_from <= local_today(request.team.zone):
        note += (
            f"; runs already finished keep their cost until `manage.py recompute_costs "
            f"--since {price.effective_from}` re-prices them"
        )
    context = _prices_context(request)
    context["notice"] = note + "."
    return changed_section(request, "runs/reports/_prices.html", context, "prices")


@require_POST
@team_view(manage=True)
def price_delete(request: HttpRequest, price_id: int) -> HttpResponse:
    price = get_for_team_or_404(Price, request.team, pk=price_id)
    record(request, "price_deleted", request.team, target=_describe_price(price))
    price.delete()
    context = _prices_context(request)
    context["notice"] = "Price deleted."
    return changed_section(request, "runs/reports/_prices.html", context, "prices")
