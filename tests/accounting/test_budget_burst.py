"""A hard-stop budget refuses a burst of runs started together as it refuses the same runs one
after another: runs still running count at their agent's typical cost, and the check and the
run's record are one step, so runs admitted at once see each other in flight.

The serial reference, with the prices below: a run of `slow-poke` costs $3 (1M input
tokens at $3 a million), the budget is $10 and $3 is already spent. One after another, runs
are admitted while the month's spend is under $10: at $3, $6 and $9, so three more.
"""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import pytest
from django.db import connection

from runs.core.validation import validate_run
from runs.models import AuditEvent, Budget, BudgetAlert, Run, Source
from runs.pipeline.budgets import BudgetExceeded, enforce_budget, in_flight
from runs.pipeline.recording import start_run
from runs.pipeline.start import Receipt, prepare
from tests.reporting import finished_run, set_price

pytestmark = pytest.mark.django_db(transaction=True)

AGENT = "slow-poke"
USAGE = {"inputTokens": 1_000_000, "outputTokens": 0}  # $3 at the default test price
BODY = {"agent": AGENT, "prompt": "Take your time", "stream": False}
ADMITTED_ONE_AFTER_ANOTHER = 3


@pytest.fixture
def three_dollars_spent_of_ten(acme):
    set_price(acme)
    finished_run(acme, agent=AGENT, usage=USAGE)  # $3 spent; the agent's typical run is $3
    return Budget.objects.create(team=acme, monthly_limit=Decimal("10.00"), hard_stop=True)


def _running(team) -> Run:
    request = validate_run(BODY, b"{}")
    return start_run(team, request, source=Source.GATEWAY)


def test_runs_still_running_count_at_their_agent_s_typical_cost(acme, three_dollars_spent_of_ten):
    budget = three_dollars_spent_of_ten
    for admitted in range(ADMITTED_ONE_AFTER_ANOTHER):
        enforce_budget(acme, AGENT)
        _running(acme)
        assert in_flight(acme, budget) == (admitted + 1, Decimal(3) * (admitted + 1))
    with pytest.raises(BudgetExceeded) as refused:
        enforce_budget(acme, AGENT)
    assert "3 runs still running" in refused.value.message
    assert "$9.00" in refused.value.message
    # A soft budget only warns: nothing is refused for runs in flight.
    Budget.objects.filter(pk=budget.pk).update(hard_stop=False)
    enforce_budget(acme, AGENT)


def test_an_agent_with_no_priced_run_reserves_nothing(acme, three_dollars_spent_of_ten):
    request = validate_run({**BODY, "agent": "support-chat"}, b"{}")
    for _ in range(5):
        start_run(acme, request, source=Source.GATEWAY)
    # Its typical cost is unknown: counted, but at nothing.
    assert in_flight(acme, three_dollars_spent_of_ten) == (5, Decimal(0))
    enforce_budget(acme, AGENT)


async def test_a_burst_through_the_gateway_is_refused_as_a_series_would_be(
    gateway, acme, three_dollars_spent_of_ten
):
    answers = await asyncio.gather(*(gateway("POST", "/v1/run", BODY) for _ in range(10)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(200) == ADMITTED_ONE_AFTER_ANOTHER, statuses
    assert statuses.count(402) == 10 - ADMITTED_ONE_AFTER_ANOTHER
    refused = next(answer for answer in answers if answer.status_code == 402)
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert await Run.objects.filter(agent=AGENT).acount() == 1 + ADMITTED_ONE_AFTER_ANOTHER


def test_workers_admitting_at_the_same_moment_are_checked_one_after_another(
    acme, acme_key, three_dollars_spent_of_ten
):
    # Threads with connections of their own, as separate workers have: each checks and
    # records at once. Without the budget held across both, they would all see $3 spent.
    request = validate_run(BODY, b"{}")
    start = threading.Barrier(8)
    admitted, refused = [], []

    def one_worker() -> None:
        try:
            start.wait()
            try:
                prepare(acme, request, source=Source.GATEWAY, receipt=Receipt.now())
                admitted.append(1)
            except BudgetExceeded:
                refused.append(1)
        finally:
            connection.close()

    workers = [threading.Thread(target=one_worker) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert (len(admitted), len(refused)) == (ADMITTED_ONE_AFTER_ANOTHER, 8 - 3)


async def test_a_refused_run_still_leaves_the_budget_s_alert_and_audit_event(
    gateway, acme, three_dollars_spent_of_ten
):
    await Budget.objects.filter(pk=three_dollars_spent_of_ten.pk).aupdate(
        monthly_limit=Decimal("2.00")
    )
    response = await gateway("POST", "/v1/run", BODY)
    assert response.status_code == 402
    # Written after the refusal's transaction, not rolled back with it.
    assert await BudgetAlert.objects.filter(level="exceeded").aexists()
    assert await AuditEvent.objects.filter(action="budget_exceeded").aexists()
