"""/healthz (liveness) and /readyz (readiness), for load balancers.

/healthz touches nothing but the process. /readyz checks the database, the channel layer and
the upstream, without leaking configuration, without leaving a Redis subscription behind per
call, and with at most one upstream probe in flight per worker, its answer kept a few seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import redis

from runs import health
from runs.core import upstream
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.helpers import loopback_upstream
from tests.live import RtdashServer
from tests.redis_servers import PrivateRedis

REDIS_URL = "redis://127.0.0.1:6379/3"
# The live server's pub/sub channels: RTDASH_CHANNEL_PREFIX defaults to rtdash.db<number>.
CHANNEL_PATTERN = "rtdash.db3*"


class CountingUpstream:
    """A stand-in upstream on loopback that counts the probes it gets, and how many at once."""

    def __init__(self, delay: float = 0.5) -> None:
        self.total = 0
        self.in_flight = 0
        self.most_in_flight = 0
        lock = threading.Lock()
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    counter.total += 1
                    counter.in_flight += 1
                    counter.most_in_flight = max(counter.most_in_flight, counter.in_flight)
                time.sleep(delay)
                with lock:
                    counter.in_flight -= 1
                self.send_response(401)  # as RunTools answers a probe without a key
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self) -> CountingUpstream:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- /healthz ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_healthz_answers_without_touching_anything(client, settings, django_assert_num_queries):
    settings.RUNTOOLS_API_URL = "http://127.0.0.1:9/v1"  # nothing listens: it must not matter
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_over_plain_http_are_not_redirected(client, settings, upstream, path):
    # With HTTPS enforced, a load balancer's plain-HTTP probe must still get its answer.
    settings.SECURE_SSL_REDIRECT = True
    settings.DEBUG = False
    assert client.get("/runs/").status_code == 301
    response = client.get(path)
    assert response.status_code == 200, response.content
    assert response.json()["ok"] is True


def test_health_endpoints_reject_post(client):
    assert client.post("/healthz").status_code == 405
    assert client.post("/readyz").status_code == 405


# --- /readyz ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_readyz_discloses_no_configuration(client, upstream, settings):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert set(response.json()) == {"ok", "checks"}
    assert settings.RUNTOOLS_API_URL not in response.content.decode()
    assert "127.0.0.1" not in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_readyz_probes_the_upstream_once_per_worker_under_a_burst(simulator):
    async def burst(url: str, count: int) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            answers = await asyncio.gather(*(client.get("/readyz") for _ in range(count)))
            return [answer.status_code for answer in answers]

    with CountingUpstream() as counting, RtdashServer(counting.url, TEST_ENCRYPTION_KEY) as server:
        assert asyncio.run(burst(server.url, 40)) == [200] * 40
        assert counting.most_in_flight == 1
        assert counting.total == 1

        # Answered from the cache for a few seconds ...
        assert asyncio.run(burst(server.url, 10)) == [200] * 10
        assert counting.total == 1

        # ... then probed again, once.
        time.sleep(health.UPSTREAM_CACHE_SECONDS + 0.5)
        assert asyncio.run(burst(server.url, 20)) == [200] * 20
        assert counting.total == 2
        assert counting.most_in_flight == 1


@pytest.mark.django_db(transaction=True)
def test_readyz_leaves_no_redis_subscription_behind(simulator):
    calls = 2000
    client = redis.Redis.from_url(REDIS_URL)
    with (
        RtdashServer(simulator.url, TEST_ENCRYPTION_KEY, REDIS_URL=REDIS_URL) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        assert http.get("/readyz").json()["checks"]["channelLayer"] is True
        before = len(client.pubsub_channels(CHANNEL_PATTERN))

        for _ in range(calls):
            answer = http.get("/readyz")
            assert answer.status_code == 200, answer.text  # which check said no

        after = len(client.pubsub_channels(CHANNEL_PATTERN))
    assert after <= before, f"{after - before} subscriptions left by {calls} calls"


@pytest.mark.django_db(transaction=True)
async def test_the_layer_check_fails_while_redis_is_down_and_recovers(settings):
    private = PrivateRedis().start()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [private.url]},
        }
    }
    try:
        assert await health.channel_layer_ok()
        private.kill()
        assert not await health.channel_layer_ok()
        private.start()
        deadline = time.monotonic() + 15
        while not await health.channel_layer_ok():
            assert time.monotonic() < deadline, "the layer check did not recover"
            await asyncio.sleep(0.2)
        # Back on one channel of its own, not one per probe.
        probes = redis.Redis.from_url(private.url)
        for _ in range(20):
            assert await health.channel_layer_ok()
        assert len(probes.pubsub_channels("*")) == 1
    finally:
        private.kill()


class _DropsTheFirstRequest(BaseHTTPRequestHandler):
    """Closes the connection on the first request without a word (a keep-alive connection the
    server closed as it was reused looks the same to the client), answers 401 after."""

    def do_GET(self) -> None:
        self.server.asked += 1
        if self.server.asked == 1:
            self.close_connection = True
            return
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


async def test_the_upstream_check_asks_again_once_when_a_connection_drops(settings):
    with loopback_upstream(settings, _DropsTheFirstRequest) as server:
        server.asked = 0
        assert await upstream.is_reachable()
        assert server.asked == 2
