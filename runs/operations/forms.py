"""Forms for alert rules and destinations; each checks only what its kind needs."""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from urllib.parse import urlsplit

from django import forms
from django.conf import settings
from django.http import HttpRequest
from django.http.request import validate_host

from runs.models import AlertKind, AlertRule, Budget, DestinationKind, Role, Team

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class AlertRuleForm(forms.Form):
    kind = forms.ChoiceField(choices=AlertKind.choices)
    budget = forms.ModelChoiceField(queryset=Budget.objects.none(), required=False)
    percent = forms.DecimalField(
        required=False, min_value=Decimal("0.01"), max_value=Decimal(1000), decimal_places=2,
        help_text="Budget rules: the share of the limit. Error-rate rules: the rate to pass.",
    )  # fmt: skip
    agent = forms.CharField(required=False, max_length=200, help_text="Blank: all agents")
    window_minutes = forms.IntegerField(required=False, min_value=1, max_value=24 * 60)
    min_runs = forms.IntegerField(required=False, min_value=1, max_value=100_000, initial=1)
    amount = forms.DecimalField(
        required=False, min_value=Decimal("0.01"), max_digits=14, decimal_places=2,
        help_text="Hourly-cost rules: dollars in the last hour.",
    )  # fmt: skip

    def __init__(self, *args, team: Team, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.team = team
        self.fields["budget"].queryset = Budget.objects.filter(team=team).order_by("agent")
        self.fields["budget"].label_from_instance = lambda budget: (
            f"{budget.agent or 'Team'} — ${budget.monthly_limit}/month"
        )

    def clean(self) -> dict:
        data = super().clean()
        kind = data.get("kind")
        needs = {
            AlertKind.BUDGET_PERCENT: ("budget", "percent"),
            AlertKind.BUDGET_HARD: ("budget",),
            AlertKind.ERROR_RATE: ("percent", "window_minutes"),
            AlertKind.HOURLY_COST: ("amount",),
        }.get(kind, ())
        for name in needs:
            if data.get(name) in (None, ""):
                self.add_error(name, "Required for this kind of rule.")
        if kind == AlertKind.ERROR_RATE and data.get("percent") and data["percent"] > 100:
            self.add_error("percent", "An error rate is at most 100%.")
        budget = data.get("budget")
        if kind == AlertKind.BUDGET_HARD and budget is not None and not budget.hard_stop:
            self.add_error("budget", "This budget is not a hard budget: it never stops runs.")
        return data

    def save(self, created_by) -> AlertRule:
        data, kind = self.cleaned_data, self.cleaned_data["kind"]
        budget_rule = kind in (AlertKind.BUDGET_PERCENT, AlertKind.BUDGET_HARD)
        return AlertRule.objects.create(
            team=self.team,
            kind=kind,
            budget=data["budget"] if budget_rule else None,
            percent=data["percent"]
            if kind in (AlertKind.BUDGET_PERCENT, AlertKind.ERROR_RATE)
            else None,
            agent=data["agent"] if kind == AlertKind.ERROR_RATE else "",
            window_minutes=data["window_minutes"] if kind == AlertKind.ERROR_RATE else None,
            min_runs=data.get("min_runs") or 1,
            amount=data["amount"] if kind == AlertKind.HOURLY_COST else None,
            created_by=created_by,
        )


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def refuse_webhook_url(url: str, own_port: int | None) -> str | None:
    """Why rtdash will not post to `url`, or None: only http(s), and never rtdash itself."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "Only http:// and https:// webhook URLs are allowed."
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return "The URL has no host."
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "The URL's port is not a number."
    if _is_loopback(host):
        if own_port is None or port == own_port:
            return "That URL is rtdash itself; alerts must go somewhere else."
        return None
    named = [name for name in settings.ALLOWED_HOSTS if name != "*"]
    if validate_host(host.lower(), named):
        return "That URL is rtdash itself (one of its ALLOWED_HOSTS); alerts must go elsewhere."
    return None


class DestinationForm(forms.Form):
    kind = forms.ChoiceField(choices=DestinationKind.choices)
    name = forms.CharField(max_length=100)
    roles = forms.MultipleChoiceField(
        choices=Role.choices, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="E-mail: the members of these roles receive the alerts.",
    )  # fmt: skip
    url = forms.URLField(required=False, max_length=500, assume_scheme="https")

    def __init__(self, *args, request: HttpRequest | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.request = request

    def clean(self) -> dict:
        data = super().clean()
        kind = data.get("kind")
        if kind == DestinationKind.EMAIL and not data.get("roles"):
            self.add_error("roles", "Choose at least one role to e-mail.")
        if kind == DestinationKind.WEBHOOK:
            url = data.get("url")
            if not url:
                if "url" not in self.errors:
                    self.add_error("url", "A webhook needs a URL.")
                return data
            own_port = None
            if self.request is not None:
                try:
                    own_port = int(self.request.get_port())
                except (TypeError, ValueError):
                    own_port = None
            problem = refuse_webhook_url(url, own_port)
            if problem:
                self.add_error("url", problem)
        return data
