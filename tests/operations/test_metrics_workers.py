"""Two workers on one database: the deployment's counters are the same from either, and each
worker's histograms count only its own runs. Run on PostgreSQL + Redis as well
(DATABASE_URL=postgres://… REDIS_URL=redis://…)."""

from __future__ import annotations

import time

import httpx
import pytest

from runs.models import Run
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.live import RtdashServer
from tests.operations.helpers import AUTH, METRICS_TOKEN, parse, total, value

pytestmark = pytest.mark.django_db(transaction=True)

BUSINESS = ("rtdash_runs_total", "rtdash_run_tokens_total", "rtdash_run_cost_usd_total")


@pytest.fixture
def two_workers(upstream):
    env = {"RTDASH_METRICS_TOKEN": METRICS_TOKEN, "RTDASH_METRICS_CACHE_SECONDS": "0"}
    with (
        RtdashServer(upstream.url, TEST_ENCRYPTION_KEY, **env) as a,
        RtdashServer(upstream.url, TEST_ENCRYPTION_KEY, **env) as b,
    ):
        yield a, b


def scrape(worker: RtdashServer):
    response = httpx.get(worker.url + "/metrics", headers=AUTH, timeout=30)
    assert response.status_code == 200
    return parse(response.text)


def business(samples) -> dict:
    return {key: v for key, v in samples.items() if key[0] in BUSINESS}


@pytest.mark.usefixtures("acme_key")
def test_the_deployment_counters_are_equal_from_either_worker(two_workers, acme_token):
    a, b = two_workers
    _token, plaintext = acme_token
    headers = {"X-API-Key": plaintext}
    runs_on = {a: 2, b: 1}
    for worker, count in runs_on.items():
        for n in range(count):
            body = {"agent": "code-assistant", "prompt": f"run {n}", "stream": False}
            response = httpx.post(worker.url + "/v1/run", json=body, headers=headers, timeout=30)
            assert response.status_code == 200

    # A JSON run's record is finished just after its response went out.
    deadline = time.monotonic() + 10
    while Run.objects.filter(status="running").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    from_a, from_b = scrape(a), scrape(b)
    assert business(from_a) == business(from_b)
    assert total(from_a, "rtdash_runs_total", team="acme", status="completed") == 3
    assert total(from_a, "rtdash_run_tokens_total", team="acme", kind="output") > 0
    # Per process: each worker's histogram holds the runs it finished, and Prometheus, scraping
    # each, sums them.
    labels = {"agent": "code-assistant", "source": "gateway"}
    counts = [value(s, "rtdash_run_duration_seconds_count", **labels) for s in (from_a, from_b)]
    assert counts == [2, 1]
    assert [value(s, "rtdash_runs_in_flight", source="gateway") for s in (from_a, from_b)] == [0, 0]


def test_each_worker_guards_its_metrics(two_workers):
    a, _b = two_workers
    assert httpx.get(a.url + "/metrics", timeout=30).status_code == 401
