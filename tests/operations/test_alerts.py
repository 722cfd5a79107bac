"""Alert rules fire once and resolve, on runs made through the real simulator."""

from __future__ import annotations

import json
import threading
from datetime import date, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.utils import timezone

from runs.gateway.views import settle
from runs.models import AlertEvent, AlertKind, AlertRule, AuditEvent, Budget, Price
from runs.operations.alerts import evaluate, evaluate_all

pytestmark = pytest.mark.django_db(transaction=True)


async def _run(async_client, token: str, agent: str = "code-assistant", **simulate) -> None:
    body = {"agent": agent, "prompt": "alert me", "stream": False}
    if simulate:
        body["metadata"] = {"simulate": simulate}
    await async_client.post(
        "/v1/run", json.dumps(body).encode(), content_type="application/json",
        headers={"X-API-Key": token},
    )  # fmt: skip
    await settle()


@pytest.fixture
def priced(acme):
    Price.objects.create(
        team=acme,
        effective_from=date(2000, 1, 1),
        input_per_million=Decimal("1000"),
        output_per_million=Decimal("1000"),
    )


@pytest.fixture
def runs(async_client, upstream, acme_key, acme_token, priced):
    _token, plaintext = acme_token

    async def make(count: int = 1, **kwargs) -> None:
        for _ in range(count):
            await _run(async_client, plaintext, **kwargs)

    return make


def states(rule: AlertRule) -> list[tuple[int, str]]:
    return list(rule.events.order_by("pk").values_list("episode", "state"))


def fire_and_resolve(rule: AlertRule, clear, later=None) -> None:
    """The rule fires once however often it is evaluated, then resolves once."""
    assert evaluate(rule) is not None
    for _ in range(3):
        evaluate_all()
    rule.refresh_from_db()
    assert rule.firing
    assert states(rule) == [(1, AlertEvent.FIRING)]
    clear()
    evaluate_all(later)
    evaluate_all(later)
    rule.refresh_from_db()
    assert not rule.firing
    assert states(rule) == [(1, AlertEvent.FIRING), (1, AlertEvent.RESOLVED)]


async def test_a_budget_percent_rule_fires_once_and_resolves(runs, acme):
    budget = await Budget.objects.acreate(team=acme, monthly_limit=Decimal("1000"))
    rule = await AlertRule.objects.acreate(
        team=acme, kind=AlertKind.BUDGET_PERCENT, budget=budget, percent=Decimal(50)
    )
    await runs(1)
    assert await sync_to_async(evaluate)(rule) is None  # a cent or so of $1,000
    await Budget.objects.filter(pk=budget.pk).aupdate(monthly_limit=Decimal("0.01"))

    def clear() -> None:
        Budget.objects.filter(pk=budget.pk).update(monthly_limit=Decimal("100000"))

    await sync_to_async(fire_and_resolve)(await _fresh(rule), clear)


async def test_a_hard_budget_rule_fires_once_and_resolves(runs, acme):
    budget = await Budget.objects.acreate(team=acme, monthly_limit=Decimal("0.01"), hard_stop=True)
    rule = await AlertRule.objects.acreate(team=acme, kind=AlertKind.BUDGET_HARD, budget=budget)
    await runs(1)

    def clear() -> None:
        Budget.objects.filter(pk=budget.pk).update(monthly_limit=Decimal("100000"))

    await sync_to_async(fire_and_resolve)(await _fresh(rule), clear)


async def test_an_error_rate_rule_fires_once_and_resolves(runs, acme):
    rule = await AlertRule.objects.acreate(
        team=acme, kind=AlertKind.ERROR_RATE, percent=Decimal(40), window_minutes=5, min_runs=3
    )
    await runs(1, agent="support-chat", status=502)
    # One failed run of one is not a rate yet (min_runs).
    assert await sync_to_async(evaluate)(rule) is None
    await runs(1)
    await runs(1, agent="support-chat", status=502)
    # Runs of other agents do not count for an agent's rule.
    other = await AlertRule.objects.acreate(
        team=acme, kind=AlertKind.ERROR_RATE, percent=Decimal(10), window_minutes=5,
        agent="code-assistant",
    )  # fmt: skip
    assert await sync_to_async(evaluate)(other) is None
    # Cleared once the failures fall out of the window.
    later = timezone.now() + timedelta(minutes=6)
    await sync_to_async(fire_and_resolve)(await _fresh(rule), lambda: None, later)


async def test_an_hourly_cost_rule_fires_once_and_resolves(runs, acme):
    rule = await AlertRule.objects.acreate(
        team=acme, kind=AlertKind.HOURLY_COST, amount=Decimal("0.01")
    )
    await runs(2)
    later = timezone.now() + timedelta(minutes=61)
    await sync_to_async(fire_and_resolve)(await _fresh(rule), lambda: None, later)


async def _fresh(rule: AlertRule) -> AlertRule:
    return await AlertRule.objects.select_related("team", "budget").aget(pk=rule.pk)


def test_workers_racing_on_one_rule_make_one_event(acme):
    """Each evaluator holds a stale copy that says the rule is quiet: only one moves it."""
    rule = AlertRule.objects.create(team=acme, kind=AlertKind.HOURLY_COST, amount=Decimal(0))
    Price.objects.create(
        team=acme, effective_from=date(2000, 1, 1), input_per_million=1, output_per_million=1
    )
    from runs.models import Run

    Run.objects.create(
        team=acme, agent="a", source="gateway", status="completed",
        started_at=timezone.now(), cost=Decimal("1"),
    )  # fmt: skip
    copies = [AlertRule.objects.select_related("team").get(pk=rule.pk) for _ in range(4)]
    results = []
    barrier = threading.Barrier(len(copies))

    def evaluate_copy(copy: AlertRule) -> None:
        from django.db import connection

        try:
            barrier.wait()
            results.append(evaluate(copy))
        finally:
            connection.close()

    threads = [threading.Thread(target=evaluate_copy, args=(copy,)) for copy in copies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([event for event in results if event is not None]) == 1
    assert states(rule) == [(1, AlertEvent.FIRING)]


def test_a_disabled_rule_is_not_evaluated(acme):
    AlertRule.objects.create(
        team=acme, kind=AlertKind.HOURLY_COST, amount=Decimal(-1), enabled=False
    )
    assert evaluate_all() == []


def test_the_command_evaluates_and_delivers_once(acme, capsys):
    AlertRule.objects.create(team=acme, kind=AlertKind.HOURLY_COST, amount=Decimal(-1))
    call_command("alerts")
    assert "1 alert event(s), 0 delivery(ies) sent" in capsys.readouterr().out
    call_command("alerts")
    assert "0 alert event(s)" in capsys.readouterr().out
    assert AuditEvent.objects.filter(action__startswith="alert").count() == 0
