"""Pricing: each run's exact cost at the price in force when it started, and its cost status."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from runs.models import DailyUsage, Run
from runs.pipeline.pricing import PriceBook, Usage, cost_of, price_run
from tests.helpers import login
from tests.reporting import finished_run, set_price

pytestmark = pytest.mark.django_db

USAGE = {"inputTokens": 1480, "outputTokens": 322}


def test_it_prices_input_and_output_exactly(acme):
    set_price(acme, input_per_million="3", output_per_million="15")
    run = finished_run(acme, usage=USAGE)
    # 1480 * $3/M + 322 * $15/M = 0.00444 + 0.00483
    assert run.cost == Decimal("0.009270000")
    assert run.cost_status == "computed"
    run.refresh_from_db()
    assert run.cost == Decimal("0.00927")


def test_cached_input_is_part_of_input_and_billed_at_the_cached_price(acme):
    set_price(acme, input_per_million="3", output_per_million="15", cached_input_per_million="0.3")
    run = finished_run(acme, usage={**USAGE, "cachedInputTokens": 1000})
    # (1480 - 1000) * 3 + 1000 * 0.3 + 322 * 15, per million
    assert run.cost == Decimal("0.00144") + Decimal("0.0003") + Decimal("0.00483")
    assert run.cost_status == "computed"


def test_a_blank_cached_price_means_the_input_price(acme):
    set_price(acme, input_per_million="3", output_per_million="15")
    with_cache = finished_run(acme, usage={**USAGE, "cachedInputTokens": 1000})
    without = finished_run(acme, usage=USAGE)
    assert with_cache.cost == without.cost


def test_cached_tokens_beyond_the_input_count_are_capped(acme):
    set_price(acme, input_per_million="3", output_per_million="0", cached_input_per_million="1")
    run = finished_run(
        acme, usage={"inputTokens": 100, "outputTokens": 0, "cachedInputTokens": 500}
    )
    assert run.cost == Decimal("0.0001")  # 100 cached tokens at $1/M, never 500


def test_reasoning_tokens_are_billed_on_top_of_output(acme):
    set_price(acme, input_per_million="3", output_per_million="15", reasoning_per_million="60")
    run = finished_run(acme, usage={**USAGE, "reasoningTokens": 500})
    assert run.cost == Decimal("0.00444") + Decimal("0.00483") + Decimal("0.03")


def test_a_blank_reasoning_price_means_the_output_price(acme):
    set_price(acme, input_per_million="0", output_per_million="10")
    run = finished_run(acme, usage={"inputTokens": 0, "outputTokens": 100, "reasoningTokens": 50})
    assert run.cost == Decimal("0.0015")


def test_no_price_is_unpriced_not_zero(acme):
    run = finished_run(acme, usage=USAGE)
    assert run.cost is None
    assert run.cost_status == "unpriced"
    row = DailyUsage.objects.get(team=acme)
    assert row.unpriced_runs == 1 and row.cost == 0


def test_another_agents_price_does_not_apply(acme):
    set_price(acme, agent="support-chat")
    run = finished_run(acme, agent="code-assistant", usage=USAGE)
    assert run.cost_status == "unpriced"


def test_another_teams_price_does_not_apply(acme, globex):
    set_price(globex)
    run = finished_run(acme, usage=USAGE)
    assert run.cost_status == "unpriced"


def test_an_agent_price_overrides_the_team_default(acme):
    set_price(acme, input_per_million="3", output_per_million="15")
    set_price(acme, agent="code-assistant", input_per_million="1", output_per_million="2")
    run = finished_run(acme, agent="code-assistant", usage=USAGE)
    other = finished_run(acme, agent="support-chat", usage=USAGE)
    assert run.cost == Decimal("0.001480") + Decimal("0.000644")
    assert other.cost == Decimal("0.00927")


def test_the_price_in_force_on_the_start_day_applies(acme):
    today = timezone.now().date()
    set_price(acme, since=today - timedelta(days=10), input_per_million="1", output_per_million="1")
    set_price(acme, since=today - timedelta(days=3), input_per_million="2", output_per_million="2")
    set_price(acme, since=today + timedelta(days=1), input_per_million="9", output_per_million="9")
    usage = {"inputTokens": 500_000, "outputTokens": 500_000}
    old = finished_run(acme, usage=usage, started_at=timezone.now() - timedelta(days=5))
    new = finished_run(acme, usage=usage, started_at=timezone.now() - timedelta(days=3))
    now = finished_run(acme, usage=usage)
    before = finished_run(acme, usage=usage, started_at=timezone.now() - timedelta(days=11))
    assert old.cost == Decimal("1")
    assert new.cost == Decimal("2")
    assert now.cost == Decimal("2")  # tomorrow's price is not in force yet
    assert before.cost_status == "unpriced"


def test_an_agent_price_from_later_leaves_earlier_runs_on_the_default(acme):
    today = timezone.now().date()
    set_price(acme, since=today - timedelta(days=30), input_per_million="1", output_per_million="1")
    set_price(
        acme, agent="code-assistant", since=today, input_per_million="5", output_per_million="5"
    )
    usage = {"inputTokens": 1_000_000, "outputTokens": 0}
    earlier = finished_run(acme, usage=usage, started_at=timezone.now() - timedelta(days=2))
    assert earlier.cost == Decimal("1")


@pytest.mark.parametrize("missing", ["inputTokens", "outputTokens"])
def test_missing_input_or_output_is_partial_with_the_known_part(acme, missing):
    set_price(acme, input_per_million="3", output_per_million="15")
    usage = {name: value for name, value in USAGE.items() if name != missing}
    run = finished_run(acme, usage=usage)
    assert run.cost_status == "partial"
    expected = Decimal("0.00483") if missing == "inputTokens" else Decimal("0.00444")
    assert run.cost == expected


def test_missing_cached_and_reasoning_counts_are_still_computed(acme):
    set_price(acme)
    run = finished_run(acme, usage={**USAGE, "totalTokens": 1802})
    assert run.cost_status == "computed"


def test_a_cut_stream_without_usage_is_partial_not_zero(acme):
    set_price(acme)
    run = finished_run(acme, usage=None, status="interrupted", http_status=200)
    assert run.cost_status == "partial"
    assert run.cost == 0


def test_a_run_refused_by_runtools_costs_nothing(acme):
    set_price(acme)
    run = finished_run(acme, usage=None, status="failed", http_status=429)
    assert run.cost_status == "computed"
    assert run.cost == 0


def test_older_openai_style_names_are_priced(acme):
    set_price(acme, input_per_million="3", output_per_million="15")
    run = finished_run(acme, usage={"promptTokens": 1480, "completionTokens": 322})
    assert run.cost == Decimal("0.00927")
    assert run.cost_status == "computed"


def test_tiny_prices_stay_exact(acme):
    set_price(acme, input_per_million="0.001", output_per_million="0.001")
    run = finished_run(acme, usage={"inputTokens": 1, "outputTokens": 2})
    assert run.cost == Decimal("0.000000003")
    run.refresh_from_db()
    assert run.cost == Decimal("0.000000003")


def test_cost_of_is_the_documented_formula():
    class P:
        input_per_million = Decimal("2.5")
        output_per_million = Decimal("10")
        cached_rate = Decimal("1.25")
        reasoning_rate = Decimal("40")

    usage = Usage(input_tokens=10_000, output_tokens=2_000, cached_input_tokens=4_000,
                  reasoning_tokens=1_000)  # fmt: skip
    cost, status = cost_of(usage, P())
    assert (
        cost == (6_000 * Decimal("2.5") + 4_000 * Decimal("1.25") + 2_000 * 10 + 1_000 * 40) / 10**6
    )
    assert status == "computed"


def test_the_price_book_agrees_with_the_database_lookup(acme):
    today = timezone.now().date()
    set_price(acme, since=today - timedelta(days=9), input_per_million="1", output_per_million="1")
    set_price(acme, agent="deep-thinker", since=today - timedelta(days=4), output_per_million="7")
    runs = [
        finished_run(acme, agent=agent, usage=USAGE, started_at=timezone.now() - timedelta(days=d))
        for agent in ("deep-thinker", "support-chat")
        for d in (1, 5, 12)
    ]
    book = PriceBook(acme.pk)
    for run in Run.objects.filter(pk__in=[r.pk for r in runs]):
        assert price_run(run, book) == price_run(run) == (run.cost, run.cost_status)


# --- recompute_costs --------------------------------------------------------------------------


def test_recompute_costs_reprices_runs_and_fixes_the_rollup(acme):
    started = timezone.now() - timedelta(days=2)
    unpriced = finished_run(acme, usage=USAGE, started_at=started)
    assert unpriced.cost_status == "unpriced"
    set_price(acme, since=started.date(), input_per_million="3", output_per_million="15")
    call_command("recompute_costs", "--since", started.date().isoformat())
    unpriced.refresh_from_db()
    assert unpriced.cost == Decimal("0.00927") and unpriced.cost_status == "computed"
    row = DailyUsage.objects.get(team=acme)
    assert row.cost == Decimal("0.00927") and row.unpriced_runs == 0


def test_recompute_costs_leaves_runs_before_since_alone(acme):
    old = finished_run(acme, usage=USAGE, started_at=timezone.now() - timedelta(days=9))
    set_price(acme, since=date(2000, 1, 1))
    since = (timezone.now() - timedelta(days=3)).date().isoformat()
    call_command("recompute_costs", "--since", since)
    old.refresh_from_db()
    assert old.cost_status == "unpriced"


def test_recompute_costs_rejects_a_bad_date(acme):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        call_command("recompute_costs", "--since", "last tuesday")


def test_it_prices_by_utc_start_day(acme):
    day = timezone.now().date() - timedelta(days=2)
    set_price(acme, since=day + timedelta(days=1), input_per_million="1", output_per_million="0")
    set_price(acme, since=day, input_per_million="9", output_per_million="0")
    late = datetime.combine(day, datetime.max.time(), tzinfo=UTC)  # 23:59:59.999999 UTC
    run = finished_run(acme, usage={"inputTokens": 1_000_000, "outputTokens": 0}, started_at=late)
    assert run.cost == Decimal("9")


# --- The prices page --------------------------------------------------------------------------


PRICE_FORM = {
    "agent": "",
    "effective_from": "2026-01-01",
    "input_per_million": "3",
    "output_per_million": "15",
    "cached_input_per_million": "0.3",
    "reasoning_per_million": "",
}


def test_the_prices_page_lists_prices(client, bob, acme):
    set_price(acme, since=date(2026, 1, 1), input_per_million="2.5")
    set_price(acme, agent="deep-thinker", since=date(2026, 2, 1), output_per_million="60")
    body = login(client, bob).get("/reports/prices").content.decode()
    assert "Team default" in body and "deep-thinker" in body
    assert "$2.500" in body and "$60.000" in body
    assert "Add a price" not in body  # a member reads, owners and admins change


def test_with_no_prices_the_page_says_runs_are_unpriced(client, alice, acme):
    body = login(client, alice).get("/reports/prices").content.decode()
    assert "No prices yet" in body and "unpriced" in body


def test_an_owner_adds_a_price_and_it_is_audited(client, alice, acme):
    response = login(client, alice).post("/reports/prices/add", PRICE_FORM)
    assert response.status_code == 302
    price = acme.prices.get()
    assert price.agent == "" and price.cached_input_per_million == Decimal("0.3")
    assert price.reasoning_per_million is None and price.created_by == alice
    event = acme.audit.get(action="price_set")
    assert "team default from 2026-01-01" in event.target and "output $15/M" in event.target


def test_a_new_price_prices_the_next_run(client, alice, acme):
    login(client, alice).post(
        "/reports/prices/add", {**PRICE_FORM, "effective_from": timezone.now().date()}
    )
    assert finished_run(acme, usage=USAGE).cost == Decimal("0.00927")


def test_htmx_gets_the_prices_section(client, alice, acme):
    response = login(client, alice).post(
        "/reports/prices/add",
        {**PRICE_FORM, "agent": "support-chat"},
        headers={"HX-Request": "true"},
    )
    body = response.content.decode()
    assert response.status_code == 200 and body.startswith('<section id="prices"')
    assert "recompute_costs --since 2026-01-01" in body


@pytest.mark.parametrize(
    "change",
    [
        {"input_per_million": "-1"},
        {"output_per_million": ""},
        {"input_per_million": "0.0001"},  # more than three decimals would not stay exact
        {"effective_from": "someday"},
    ],
)
def test_it_rejects_a_bad_price(client, alice, acme, change):
    response = login(client, alice).post("/reports/prices/add", {**PRICE_FORM, **change})
    assert response.status_code == 400
    assert not acme.prices.exists()


def test_it_refuses_two_prices_for_the_same_agent_and_day(client, alice, acme):
    login(client, alice).post("/reports/prices/add", PRICE_FORM)
    response = client.post("/reports/prices/add", {**PRICE_FORM, "input_per_million": "9"})
    assert response.status_code == 400
    assert acme.prices.get().input_per_million == Decimal("3")


@pytest.mark.parametrize("member", ["bob", "victor"])
def test_members_and_viewers_cannot_change_prices(client, request, acme, member):
    user = request.getfixturevalue(member)
    price = set_price(acme)
    login(client, user)
    assert client.post("/reports/prices/add", PRICE_FORM).status_code == 404
    assert client.post(f"/reports/prices/{price.pk}/delete").status_code == 404
    assert acme.prices.count() == 1


def test_an_owner_deletes_a_price(client, alice, acme):
    price = set_price(acme)
    assert login(client, alice).post(f"/reports/prices/{price.pk}/delete").status_code == 302
    assert not acme.prices.exists()
    assert acme.audit.filter(action="price_deleted").exists()


def test_an_outsider_cannot_touch_or_see_acme_prices(client, charlie, acme):
    price = set_price(acme, input_per_million="123.456")
    login(client, charlie)
    assert client.post(f"/reports/prices/{price.pk}/delete").status_code == 404
    assert acme.prices.exists()
    assert "123.456" not in client.get("/reports/prices").content.decode()
    client.post("/reports/prices/add", PRICE_FORM)
    assert acme.prices.count() == 1  # charlie's price went to globex


def test_the_price_pages_require_login(client, acme):
    price = set_price(acme)
    for method, url in [
        ("get", "/reports/prices"),
        ("post", "/reports/prices/add"),
        ("post", f"/reports/prices/{price.pk}/delete"),
    ]:
        response = getattr(client, method)(url)
        assert response.status_code == 302 and "/login/" in response["Location"]
    assert acme.prices.exists()


def test_the_price_pages_reject_the_wrong_method(client, alice, acme):
    price = set_price(acme)
    login(client, alice)
    assert client.post("/reports/prices").status_code == 405
    assert client.get("/reports/prices/add").status_code == 405
    assert client.get(f"/reports/prices/{price.pk}/delete").status_code == 405
