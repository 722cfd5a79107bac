"""Spend by a metadata key: `group_by=meta:<key>` on the page, the CSV and /api/usage, with sums
equal to those of the runs, "(none)" for runs without the key, bounded keys and values, the
rollup rebuilt alike, and hostile keys refused."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from runs.core.exact_sums import NanoSum, from_nanos
from runs.core.formatting import money_number
from runs.core.validation import validate_run
from runs.models import Run
from runs.models.usage import META_KEYS_PER_TEAM, DailyMetaUsage, MetaKey
from runs.pipeline import meta_usage
from runs.pipeline.meta_usage import tracked_keys
from runs.pipeline.recording import RunOutcome, finish_run, rebuild_usage, start_run
from runs.reports.meta_report import meta_usage_report
from runs.reports.queries import make_period
from tests.helpers import login
from tests.reporting import set_price

pytestmark = pytest.mark.django_db


def meta_run(team, metadata, *, input_tokens=1000, output_tokens=100, started_at=None, **fields):
    """A run carrying `metadata`, finished through finish_run like every run."""
    body = {"agent": fields.pop("agent", "code-assistant"), "prompt": "hi", "metadata": metadata}
    request = validate_run(body, json.dumps(body).encode())
    run = start_run(team, request, source="gateway", **fields)
    if started_at is not None:
        Run.objects.filter(pk=run.pk).update(started_at=started_at)
    usage = {"inputTokens": input_tokens, "outputTokens": output_tokens}
    return finish_run(run.pk, RunOutcome(status="completed", usage=usage, http_status=200))


@pytest.fixture
def tagged(acme):
    """Runs for three customers, some without the key, one with a non-text value."""
    set_price(acme, since=timezone.now().date() - timedelta(days=40))
    now = timezone.now()
    for n in range(9):
        customer = ["initech", "hooli", "umbrella"][n % 3]
        meta_run(acme, {"customer": customer, "env": "prod"}, input_tokens=1000 + 37 * n,
                 output_tokens=11 * n, started_at=now - timedelta(days=n))  # fmt: skip
    meta_run(acme, {"env": "staging"}, input_tokens=5000)
    meta_run(acme, {}, input_tokens=7000, output_tokens=3)
    meta_run(acme, {"customer": {"id": 7}}, input_tokens=123)  # not a value: "(none)"
    meta_run(acme, {"customer": 42}, input_tokens=77)  # a number is a value


def expected_by_customer(team, since) -> dict[str, dict]:
    """The sums over the runs themselves: what every report must equal."""
    sums: dict[str, dict] = defaultdict(lambda: {"runs": 0, "input": 0, "output": 0, "cost": 0})
    for run in Run.objects.filter(team=team, started_at__date__gte=since):
        value = (run.metadata or {}).get("customer")
        key = value if isinstance(value, str) else "42" if value == 42 else "(none)"
        sums[key]["runs"] += 1
        sums[key]["input"] += run.input_tokens
        sums[key]["output"] += run.output_tokens
        sums[key]["cost"] += run.cost
    return dict(sums)


def test_the_api_groups_by_a_metadata_key_with_exact_sums(client, acme, alice, tagged):
    login(client, alice)
    response = client.get("/api/usage?group_by=meta:customer")
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data["groupBy"] == "meta:customer"
    expected = expected_by_customer(acme, timezone.now().date() - timedelta(days=29))
    got = {group["label"]: group for group in data["groups"]}
    assert set(got) == set(expected) == {"initech", "hooli", "umbrella", "42", "(none)"}
    for label, sums in expected.items():
        assert got[label]["runs"] == sums["runs"], label
        assert got[label]["inputTokens"] == sums["input"], label
        assert got[label]["outputTokens"] == sums["output"], label
        assert Decimal(got[label]["cost"]) == sums["cost"], label
    assert got["(none)"]["runs"] == 3
    assert sum(Decimal(group["cost"]) for group in data["groups"]) == Decimal(
        data["totals"]["cost"]
    )


def test_the_page_and_the_csv_show_the_same_sums(client, acme, alice, tagged):
    login(client, alice)
    page = client.get("/reports?period=7d&group_by=meta:customer")
    assert page.status_code == 200
    assert "meta: customer" in page.text  # offered among the groupings
    assert "initech" in page.text and "(none)" in page.text
    assert "meta=customer%3Dhooli" in page.text  # each row links to its runs
    exported = client.get("/reports/export.csv?period=7d&group_by=meta:customer")
    assert exported.status_code == 200
    rows = {row["label"]: row for row in csv.DictReader(io.StringIO(exported.text))}
    expected = expected_by_customer(acme, timezone.now().date() - timedelta(days=6))
    for label, sums in expected.items():
        assert int(rows[label]["runs"]) == sums["runs"], label
        # Rounded as the page shows it; the exact sums are the API's (test above).
        assert rows[label]["cost"] == money_number(sums["cost"]), label
        assert int(rows[label]["inputTokens"]) == sums["input"], label
    assert int(rows["TOTAL"]["runs"]) == sum(sums["runs"] for sums in expected.values())


def test_the_rebuilt_rollup_is_the_recorded_one(acme, tagged):
    def rows():
        return sorted(
            DailyMetaUsage.objects.filter(team=acme).values_list(
                "day", "key", "value", "runs", "input_tokens", "output_tokens", "cost",
                "partial_runs", "unpriced_runs", "duration_ms",
            )
        )  # fmt: skip

    recorded = rows()
    assert recorded
    rebuild_usage(acme)
    assert rows() == recorded


def test_a_run_finished_again_is_counted_once(acme):
    run = meta_run(acme, {"customer": "initech"}, input_tokens=10)
    outcome = RunOutcome(status="completed", usage={"inputTokens": 500}, http_status=200)
    finish_run(run.pk, outcome, take_back=lambda _run: True)
    row = DailyMetaUsage.objects.get(team=acme, key="customer")
    assert (row.runs, row.input_tokens) == (1, 500)


def test_keys_are_bounded_per_team(acme):
    many = {f"k{n:02}": "v" for n in range(META_KEYS_PER_TEAM + 5)}
    meta_run(acme, many)
    meta_run(acme, {"late": "x"})
    keys = tracked_keys(acme)
    assert len(keys) == META_KEYS_PER_TEAM and "late" not in keys
    assert MetaKey.objects.filter(team=acme).count() == META_KEYS_PER_TEAM
    assert not DailyMetaUsage.objects.filter(key="late").exists()


def test_values_are_bounded_per_day_and_capped_in_length(acme, monkeypatch):
    monkeypatch.setattr(meta_usage, "META_VALUES_PER_DAY", 2)
    for value in ("a", "b", "c", "d", "a"):
        meta_run(acme, {"request": value})
    meta_run(acme, {"note": "x" * 500})
    values = dict(DailyMetaUsage.objects.filter(key="request").values_list("value", "runs"))
    assert values == {"a": 2, "b": 1, "(other)": 2}
    assert DailyMetaUsage.objects.get(key="note").value == "x" * 100


def test_another_teams_keys_are_not_offered(client, acme, charlie, tagged):
    login(client, charlie)
    response = client.get("/api/usage?group_by=meta:customer")
    assert response.status_code == 400
    page = client.get("/reports")
    assert "meta: customer" not in page.text


@pytest.mark.parametrize(
    "group_by",
    ["meta:", "meta:../etc", "meta:a b", "meta:" + "k" * 65, "meta:<script>", "meta:unknown",
     "metadata", "meta:customer\x00"],
)  # fmt: skip
def test_hostile_or_unknown_keys_are_refused(client, acme, alice, tagged, group_by):
    login(client, alice)
    api = client.get("/api/usage", {"group_by": group_by})
    assert api.status_code == 400
    assert api.json()["error"]["code"] == "bad_request"
    page = client.get("/reports", {"group_by": group_by})
    assert page.status_code == 400
    assert 'class="notice error"' in page.text
    assert "<script>" not in page.text
    assert client.get("/reports/export.csv", {"group_by": group_by}).status_code == 400


def test_another_teams_runs_with_the_same_values_are_not_counted(acme, globex, tagged):
    set_price(globex, since=timezone.now().date() - timedelta(days=40))
    for _ in range(3):
        meta_run(globex, {"customer": "initech"}, input_tokens=99_999)
    period = make_period("30d")
    report = meta_usage_report(acme, period, "customer")
    expected = expected_by_customer(acme, period.since)
    got = {row.label: row for row in report.rows}
    assert got["initech"].runs == expected["initech"]["runs"]
    assert got["initech"].input_tokens == expected["initech"]["input"]
    assert got["initech"].cost == expected["initech"]["cost"]
    assert report.totals.runs == sum(sums["runs"] for sums in expected.values())


def test_values_count_on_the_teams_day(acme):
    """A run just after local midnight in Los Angeles is on that day, not on UTC's."""
    acme.timezone = "America/Los_Angeles"
    acme.save()
    set_price(acme, since=date(2026, 11, 1))
    zone = ZoneInfo("America/Los_Angeles")
    late = datetime(2026, 11, 20, 23, 59, tzinfo=zone)
    early = datetime(2026, 11, 21, 0, 1, tzinfo=zone)  # 08:01 UTC
    meta_run(acme, {"customer": "initech"}, input_tokens=1000, started_at=late)
    meta_run(acme, {"customer": "initech"}, input_tokens=3000, started_at=early)
    meta_run(acme, {}, input_tokens=5000, started_at=early)
    acme.refresh_from_db()
    day = make_period("custom", "2026-11-21", "2026-11-21", zone=acme.zone)
    report = meta_usage_report(acme, day, "customer")
    got = {row.label: (row.runs, row.input_tokens) for row in report.rows}
    assert got == {"initech": (1, 3000), "(none)": (1, 5000)}


def test_a_values_sum_is_exact_where_adding_floats_is_not(acme):
    """SQLite keeps costs as floats: these add up to a sum with more digits than a float holds
    (its SUM gives 9876543.21012341). The report's sum is the exact one, on either database."""
    costs = [Decimal("98765.432101234")] * 100 + [Decimal("0.000000007")]
    start = date(2026, 8, 1)
    for n, cost in enumerate(costs):
        DailyMetaUsage.objects.create(
            team=acme, day=start + timedelta(days=n), key="customer", value="initech",
            runs=1, cost=cost,
        )  # fmt: skip
    exact = Decimal("9876543.210123407")
    assert sum(costs) == exact
    rows = DailyMetaUsage.objects.filter(team=acme)
    total = from_nanos(rows.aggregate(total=NanoSum("cost"))["total"])
    assert (total, str(total)) == (exact, str(exact))  # the same places, too
    period = make_period("custom", "2026-08-01", "2026-12-01")
    (row,) = [row for row in meta_usage_report(acme, period, "customer").rows if row.key]
    assert (row.runs, row.cost) == (101, exact)


def test_the_table_escapes_values_and_their_links(client, acme, alice):
    set_price(acme, since=timezone.now().date() - timedelta(days=40))
    hostile = '"><img src=x onerror=alert(1)>&co'
    meta_run(acme, {"customer": hostile})
    login(client, alice)
    body = client.get("/reports?period=7d&group_by=meta:customer").content.decode()
    assert "<img src=x" not in body
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&amp;co</a>" in body
    # The link carries the value URL-encoded, its & escaped as the attribute needs.
    assert "meta=customer%3D%22%3E%3Cimg+src%3Dx+onerror%3Dalert%281%29%3E%26co" in body
