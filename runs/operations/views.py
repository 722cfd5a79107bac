"""/metrics for Prometheus, alert settings for owners and admins, and the alerts page."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from runs.core.access import TeamRequest, for_team, get_for_team_or_404, team_view
from runs.core.audit import record
from runs.models import (
    AlertAttempt,
    AlertDelivery,
    AlertDestination,
    AlertEvent,
    AlertRule,
    DestinationKind,
)
from runs.operations import metrics
from runs.operations.alerts import describe
from runs.operations.delivery import new_webhook_secret
from runs.operations.forms import AlertRuleForm, DestinationForm

EVENTS_SHOWN = 50


@never_cache
@require_GET
def metrics_page(request: HttpRequest) -> HttpResponse:
    """Off (404) without RTDASH_METRICS_TOKEN; with it, only for `Authorization: Bearer <it>`."""
    token = settings.RTDASH_METRICS_TOKEN
    if not token:
        raise Http404("Metrics are off.")
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode(), token.encode()
    ):
        response = HttpResponse("A metrics token is required.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="rtdash metrics"'
        response["Content-Type"] = "text/plain; charset=utf-8"
        return response
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)


# --- alert settings ------------------------------------------------------------------------


def _settings_context(request: TeamRequest, **extra) -> dict:
    team = request.team
    rules = for_team(AlertRule, team).select_related("budget").order_by("created_at", "pk")
    context = {
        "rules": [(rule, describe(rule)) for rule in rules],
        "destinations": for_team(AlertDestination, team).order_by("created_at", "pk"),
        "rule_form": AlertRuleForm(team=team),
        "destination_form": DestinationForm(),
    }
    context.update(extra)
    return context


@require_GET
@team_view(manage=True)
def alert_settings(request: TeamRequest) -> HttpResponse:
    return render(request, "runs/operations/settings.html", _settings_context(request))


@require_POST
@team_view(manage=True)
def rule_add(request: TeamRequest) -> HttpResponse:
    form = AlertRuleForm(request.POST, team=request.team)
    if not form.is_valid():
        context = _settings_context(request, rule_form=form)
        return render(request, "runs/operations/settings.html", context, status=400)
    rule = form.save(created_by=request.user)
    record(request, "alert_rule_added", request.team, target=f"#{rule.pk} {describe(rule)}")
    messages.success(request, "Alert rule added.")
    return redirect(reverse("alert_settings"))


@require_POST
@team_view(manage=True)
def rule_delete(request: TeamRequest, rule_id: int) -> HttpResponse:
    rule = get_for_team_or_404(AlertRule, request.team, pk=rule_id)
    target = f"#{rule.pk} {describe(rule)}"
    rule.delete()
    record(request, "alert_rule_deleted", request.team, target=target)
    messages.success(request, "Alert rule deleted.")
    return redirect(reverse("alert_settings"))


@never_cache
@require_POST
@team_view(manage=True)
def destination_add(request: TeamRequest) -> HttpResponse:
    form = DestinationForm(request.POST, request=request)
    if not form.is_valid():
        context = _settings_context(request, destination_form=form)
        return render(request, "runs/operations/settings.html", context, status=400)
    data = form.cleaned_data
    destination = AlertDestination(
        team=request.team, kind=data["kind"], name=data["name"], created_by=request.user
    )
    secret = ""
    if destination.kind == DestinationKind.WEBHOOK:
        destination.url = data["url"]
        secret, destination.secret_ciphertext = new_webhook_secret()
    else:
        destination.roles = ",".join(data["roles"])
    destination.save()
    record(
        request,
        "alert_destination_added",
        request.team,
        target=f"{destination.kind} {destination.name}",
    )
    # The secret exists in the clear only in this one response (never a redirect or session).
    context = _settings_context(request, new_destination=destination, new_secret=secret)
    return render(request, "runs/operations/settings.html", context)


@require_POST
@team_view(manage=True)
def destination_delete(request: TeamRequest, destination_id: int) -> HttpResponse:
    destination = get_for_team_or_404(AlertDestination, request.team, pk=destination_id)
    target = f"{destination.kind} {destination.name}"
    destination.delete()
    record(request, "alert_destination_deleted", request.team, target=target)
    messages.success(request, "Destination deleted.")
    return redirect(reverse("alert_settings"))


# --- the alerts page -------------------------------------------------------------------------


@require_GET
@team_view()
def alert_log(request: TeamRequest) -> HttpResponse:
    """Every member may read what was sent and how each try went."""
    events = list(for_team(AlertEvent, request.team).order_by("-created_at", "-pk")[:EVENTS_SHOWN])
    deliveries = (
        AlertDelivery.objects.filter(event__in=events).select_related("destination").order_by("pk")
    )
    attempts = AlertAttempt.objects.filter(delivery__in=deliveries).order_by("at", "pk")
    by_delivery: dict[int, list[AlertAttempt]] = {}
    for attempt in attempts:
        by_delivery.setdefault(attempt.delivery_id, []).append(attempt)
    by_event: dict[int, list] = {}
    for delivery in deliveries:
        by_event.setdefault(delivery.event_id, []).append(
            (delivery, by_delivery.get(delivery.pk, []))
        )
    rows = [(event, by_event.get(event.pk, [])) for event in events]
    context = {"rows": rows, "can_manage": request.membership.can_manage}
    return render(request, "runs/operations/alerts.html", context)
