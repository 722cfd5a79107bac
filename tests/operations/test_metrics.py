"""GET /metrics: the token guard, and each metric's value after known runs through the real
simulator (gateway in-process, playground over its real websocket)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db.models import Sum

from runs.gateway.views import settle
from runs.models import DailyUsage, Price, Run
from tests.operations.helpers import AUTH, METRICS_TOKEN, parse, total, value

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def metrics_on(settings):
    settings.RTDASH_METRICS_TOKEN = METRICS_TOKEN
    settings.RTDASH_METRICS_CACHE_SECONDS = 0


async def scrape(async_client):
    response = await async_client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    return parse(response.content.decode())


# --- the guard -----------------------------------------------------------------------------


def test_it_is_off_without_a_token(client, settings):
    settings.RTDASH_METRICS_TOKEN = ""
    assert client.get("/metrics", headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-token", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x", "Bearer"],
)
@pytest.mark.usefixtures("metrics_on")
def test_it_requires_the_token(client, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert "rtdash_" not in response.content.decode()


@pytest.mark.usefixtures("metrics_on", "acme")
def test_it_serves_the_text_format_with_the_token(client):
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = parse(response.content.decode())
    # The process metrics come with prometheus-client.
    assert value(samples, "process_cpu_seconds_total") > 0
    assert ("rtdash_runs_in_flight", frozenset({("source", "gateway")})) in samples


@pytest.mark.usefixtures("metrics_on")
def test_it_rejects_post(client):
    assert client.post("/metrics", headers=AUTH).status_code == 405


# --- values after known runs ---------------------------------------------------------------


async def _gateway_run(async_client, token: str, body: dict) -> None:
    response = await async_client.post(
        "/v1/run", json.dumps(body).encode(), content_type="application/json",
        headers={"X-API-Key": token},
    )  # fmt: skip
    if response.streaming:
        b"".join([chunk async for chunk in response.streaming_content])
    await settle()


def _set_price(team) -> None:
    Price.objects.create(
        team=team,
        effective_from=date(2000, 1, 1),
        input_per_million=Decimal("3"),
        output_per_million=Decimal("15"),
    )


@pytest.mark.usefixtures("metrics_on", "upstream", "acme_key")
async def test_each_metric_counts_known_gateway_runs(async_client, acme, acme_token):
    await sync_to_async(_set_price)(acme)
    _token, plaintext = acme_token
    before = await scrape(async_client)

    await _gateway_run(async_client, plaintext, {"agent": "code-assistant", "prompt": "one"})
    await _gateway_run(
        async_client, plaintext, {"agent": "code-assistant", "prompt": "two", "stream": False}
    )
    await _gateway_run(
        async_client,
        plaintext,
        {"agent": "support-chat", "prompt": "fails", "metadata": {"simulate": {"status": 502}}},
    )
    after = await scrape(async_client)

    runs = [run async for run in Run.objects.filter(team=acme).order_by("pk")]
    assert [run.status for run in runs] == ["completed", "completed", "failed"]
    labels = {"team": "acme", "source": "gateway"}
    assert (
        value(after, "rtdash_runs_total", agent="code-assistant", status="completed", **labels) == 2
    )
    assert value(after, "rtdash_runs_total", agent="support-chat", status="failed", **labels) == 1
    assert total(after, "rtdash_runs_total", team="acme") == 3
    for kind, column in (("input", "input_tokens"), ("output", "output_tokens")):
        expected = sum(getattr(run, column) or 0 for run in runs if run.agent == "code-assistant")
        assert expected > 0
        assert (
            value(after, "rtdash_run_tokens_total", team="acme", agent="code-assistant", kind=kind)
            == expected
        )
    cost = sum((run.cost or Decimal(0)) for run in runs)
    assert cost > 0
    assert total(after, "rtdash_run_cost_usd_total", team="acme") == pytest.approx(float(cost))

    # This process's histograms and counters moved by exactly these runs.
    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("rtdash_run_duration_seconds_count", agent="code-assistant", source="gateway") == 2
    assert moved("rtdash_run_duration_seconds_count", agent="support-chat", source="gateway") == 1
    seconds = sum(run.duration_ms for run in runs if run.agent == "code-assistant") / 1000
    assert moved(
        "rtdash_run_duration_seconds_sum", agent="code-assistant", source="gateway"
    ) == pytest.approx(seconds)
    with_first_byte = [run for run in runs if run.first_byte_ms is not None]
    assert moved(
        "rtdash_run_first_token_seconds_count", agent="code-assistant", source="gateway"
    ) == len([run for run in with_first_byte if run.agent == "code-assistant"])
    assert moved("rtdash_gateway_overhead_seconds_count") == 3
    assert moved("rtdash_upstream_errors_total", code="provider_error") == 1
    assert value(after, "rtdash_runs_in_flight", source="gateway") == 0


@pytest.mark.usefixtures("metrics_on")
async def test_agents_beyond_the_cap_are_counted_as_other(async_client, acme, settings):
    settings.RTDASH_METRICS_MAX_AGENTS = 2

    def seed() -> None:
        for agent, runs in (("busy", 5), ("steady", 3), ("rare", 1), ("rarer", 1)):
            DailyUsage.objects.create(
                team=acme, day=date(2026, 1, 1), dimensions=f"{agent}|||gateway", agent=agent,
                source="gateway", runs=runs, completed=runs, input_tokens=10 * runs,
                cost=Decimal(runs),
            )  # fmt: skip

    await sync_to_async(seed)()
    samples = await scrape(async_client)
    agents = {
        dict(labels)["agent"]
        for name, labels in samples
        if name == "rtdash_runs_total" and dict(labels)["team"] == "acme"
    }
    assert agents == {"busy", "steady", "other"}
    assert (
        value(
            samples,
            "rtdash_runs_total",
            team="acme",
            agent="other",
            source="gateway",
            status="completed",
        )
        == 2
    )
    assert value(samples, "rtdash_run_tokens_total", team="acme", agent="other", kind="input") == 20
    expected = await DailyUsage.objects.filter(team=acme).aaggregate(cost=Sum("cost"))
    assert total(samples, "rtdash_run_cost_usd_total", team="acme") == float(expected["cost"])


@pytest.mark.usefixtures("metrics_on")
async def test_the_counters_are_cached_briefly(async_client, acme, settings):
    settings.RTDASH_METRICS_CACHE_SECONDS = 60
    await scrape(async_client)  # fills the cache
    await DailyUsage.objects.acreate(
        team=acme, day=date(2026, 1, 2), dimensions="cached|||gateway", agent="cached",
        source="gateway", runs=4, completed=4,
    )  # fmt: skip
    cached = await scrape(async_client)
    assert total(cached, "rtdash_runs_total", agent="cached") == 0
    settings.RTDASH_METRICS_CACHE_SECONDS = 0
    fresh = await scrape(async_client)
    assert total(fresh, "rtdash_runs_total", agent="cached") == 4


@pytest.fixture
def application(settings):
    # As in tests/playground: rtdash.asgi refuses laptop settings unless DEBUG is on, and
    # would start the maintenance thread unless the reaper interval is 0.
    settings.DEBUG = True
    settings.RTDASH_REAPER_INTERVAL = 0
    from rtdash.asgi import application

    settings.DEBUG = False
    return application


@pytest.mark.usefixtures("metrics_on", "upstream", "acme_key")
async def test_relayed_frames_are_counted(async_client, application, bob):
    from tests.sockets import HELLO, Socket

    before = await scrape(async_client)
    async with Socket(application, "/ws/playground/", bob) as socket:
        run_id = await socket.start(HELLO)
        await socket.until("finished")
    await settle()
    after = await scrape(async_client)

    run = await Run.objects.aget(pk=run_id)
    assert run.frame_count > 0
    relayed = value(after, "rtdash_relay_frames_total") - value(before, "rtdash_relay_frames_total")
    assert relayed == run.frame_count == len(socket.frames)
    moved = value(
        after, "rtdash_run_duration_seconds_count", agent="support-chat", source="playground"
    ) - value(
        before, "rtdash_run_duration_seconds_count", agent="support-chat", source="playground"
    )
    assert moved == 1


@pytest.mark.usefixtures("metrics_on")
def test_it_is_not_redirected_to_https(settings):
    """Prometheus scrapes each worker's own address, where there is no TLS to redirect to."""
    from django.test import Client

    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    assert client.get("/metrics", headers=AUTH).status_code == 200
    assert client.get("/login/").status_code == 301
