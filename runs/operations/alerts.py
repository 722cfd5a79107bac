"""Evaluating alert rules: is each condition true now, and did that change?

A rule moves between quiet and firing by a conditional UPDATE (`firing` from false to true, or
back), so when several workers evaluate the same rule at once, exactly one of them makes the
move and writes the event and its deliveries, in the same transaction. An episode alerts once
when it begins and once when it clears: no storm however long the condition holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from runs.models import (
    FINISHED_STATUSES,
    AlertDelivery,
    AlertDestination,
    AlertEvent,
    AlertKind,
    AlertRule,
    Run,
    RunStatus,
)
from runs.pipeline.budgets import money, month_spend, month_start


@dataclass
class Reading:
    """A rule's condition now: whether it holds, and the figure it was judged on."""

    holds: bool
    value: str


def _number(value: Decimal | None) -> str:
    """80.00 as "80", 12.50 as "12.5"."""
    return f"{(value or Decimal(0)).normalize():f}"


def describe(rule: AlertRule) -> str:
    """What the rule watches, in words (for the settings page and the alerts)."""
    scope = f"agent {rule.agent}" if rule.agent else "all agents"
    if rule.kind in (AlertKind.BUDGET_PERCENT, AlertKind.BUDGET_HARD) and rule.budget:
        budget = f"agent {rule.budget.agent}'s budget" if rule.budget.agent else "the team budget"
        limit = money(rule.budget.monthly_limit)
        if rule.kind == AlertKind.BUDGET_PERCENT:
            return f"{budget} reached {_number(rule.percent)}% of {limit}"
        return f"{budget} hit its hard limit of {limit}"
    if rule.kind == AlertKind.ERROR_RATE:
        window = f"the last {rule.window_minutes} min"
        return f"error rate of {scope} over {_number(rule.percent)}% in {window}"
    if rule.kind == AlertKind.HOURLY_COST:
        return f"cost in the last hour over {money(rule.amount)}"
    return rule.kind


def read(rule: AlertRule, now: datetime) -> Reading:
    """Whether the rule's condition holds at `now` (a few grouped queries at most)."""
    if rule.kind in (AlertKind.BUDGET_PERCENT, AlertKind.BUDGET_HARD):
        budget = rule.budget
        if budget is None:
            return Reading(False, "")
        spent, _unpriced = month_spend(rule.team, budget.agent, month_start(now, rule.team.zone))
        limit = budget.monthly_limit
        percent = spent / limit * 100 if limit else Decimal(100)
        value = f"{money(spent)} of {money(limit)} ({percent:.0f}%)"
        if rule.kind == AlertKind.BUDGET_HARD:
            return Reading(budget.hard_stop and spent >= limit, value)
        return Reading(percent >= (rule.percent or 0), value)
    runs = Run.objects.filter(team_id=rule.team_id, status__in=FINISHED_STATUSES)
    if rule.kind == AlertKind.ERROR_RATE:
        runs = runs.filter(started_at__gte=now - timedelta(minutes=rule.window_minutes or 1))
        if rule.agent:
            runs = runs.filter(agent=rule.agent)
        failed = [RunStatus.FAILED, RunStatus.INTERRUPTED]
        counts = runs.aggregate(total=Count("pk"), failed=Count("pk", filter=Q(status__in=failed)))
        total, failures = counts["total"], counts["failed"]
        rate = Decimal(failures * 100) / total if total else Decimal(0)
        value = f"{failures} of {total} runs failed ({rate:.1f}%)"
        return Reading(total >= max(1, rule.min_runs) and rate > (rule.percent or 0), value)
    if rule.kind == AlertKind.HOURLY_COST:
        runs = runs.filter(started_at__gte=now - timedelta(hours=1))
        cost = runs.aggregate(cost=Sum("cost"))["cost"] or Decimal(0)
        return Reading(cost > (rule.amount or 0), f"{money(cost)} in the last hour")
    return Reading(False, "")


def _open_event(rule: AlertRule, state: str, reading: Reading) -> AlertEvent:
    rule.refresh_from_db(fields=["episode"])
    summary = describe(rule)
    summary = f"{'Resolved' if state == AlertEvent.RESOLVED else 'Alert'}: {summary}"
    event = AlertEvent.objects.create(
        team_id=rule.team_id,
        rule=rule,
        episode=rule.episode,
        state=state,
        summary=f"{summary} — {rule.team.name}: {reading.value}"[:300],
        value=reading.value[:100],
    )
    destinations = AlertDestination.objects.filter(team_id=rule.team_id)
    AlertDelivery.objects.bulk_create(
        AlertDelivery(event=event, destination=destination) for destination in destinations
    )
    return event


def evaluate(rule: AlertRule, now: datetime | None = None) -> AlertEvent | None:
    """Read the rule and, if its state changed, record the change once; the event or None."""
    now = now or timezone.now()
    reading = read(rule, now)
    quiet, firing = AlertRule.objects.filter(pk=rule.pk, firing=False), None
    with transaction.atomic():
        if reading.holds and not rule.firing:
            moved = quiet.update(firing=True, episode=F("episode") + 1, last_value=reading.value)
            firing = AlertEvent.FIRING if moved else None
        elif not reading.holds and rule.firing:
            moved = AlertRule.objects.filter(pk=rule.pk, firing=True).update(
                firing=False, last_value=reading.value
            )
            firing = AlertEvent.RESOLVED if moved else None
        else:
            AlertRule.objects.filter(pk=rule.pk).update(last_value=reading.value)
        if firing is None:
            return None
        rule.firing = firing == AlertEvent.FIRING
        return _open_event(rule, firing, reading)


def evaluate_all(now: datetime | None = None) -> list[AlertEvent]:
    """Evaluate every enabled rule of every team; the events this round made."""
    now = now or timezone.now()
    rules = AlertRule.objects.filter(enabled=True).select_related("team", "budget").order_by("pk")
    return [event for rule in rules.iterator() if (event := evaluate(rule, now)) is not None]
