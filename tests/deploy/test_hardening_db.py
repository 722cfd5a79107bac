"""The database under pressure (issue 13, items 1 and 10): a worker never opens more
PostgreSQL connections than its pool, a request that cannot get one is answered 503, and a
database that is down gives 503s in the RunTools envelope, not 500 HTML pages.

Each test runs a real uvicorn worker with debug off, as deployed.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import threading
import time

import httpx
import psycopg
import pytest
from django.conf import settings

from simulator.testing import HOST, free_port
from tests import live
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.live import RtdashServer

pytestmark = pytest.mark.django_db(transaction=True)

on_postgresql = pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="the connection pool is PostgreSQL's (set DATABASE_URL=postgres://...)",
)


def production(**env: str) -> dict[str, str]:
    """A deployed worker's settings, minus HTTPS (the tests speak plain HTTP on loopback)."""
    production_env = {
        "RTDASH_DEBUG": "0",
        "RTDASH_SECRET_KEY": secrets.token_urlsafe(50),
        "RTDASH_ALLOWED_HOSTS": HOST,
        "RTDASH_SSL_REDIRECT": "0",
        "RTDASH_LOG_LEVEL": "INFO",
    }
    if not os.environ.get("REDIS_URL"):
        production_env["RTDASH_SILENCED_CHECKS"] = "rtdash.E003"
    return {**production_env, **env}


def postgres_connections(application_name: str) -> int:
    """Connections PostgreSQL has from processes started with PGAPPNAME=application_name
    (libpq's own variable, so the count relies on nothing rtdash sets)."""
    with psycopg.connect(live.test_database_url(), application_name="sampler") as connection:
        return connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        ).fetchone()[0]


def _login_form(client: httpx.Client) -> tuple[str, str]:
    """(csrftoken cookie, form token) from the login page. The cookie is Secure with debug
    off, so it is sent by hand over plain HTTP."""
    page = client.get("/login/")
    cookie = page.cookies["csrftoken"]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return cookie, token


# --- Item 10: the database is down ----------------------------------------------------------


@pytest.fixture
def outage_server(upstream):
    closed = f"postgres://postgres@{HOST}:{free_port()}/rtdash"  # nothing listens there
    env = production(DATABASE_URL=closed, RTDASH_DB_POOL_TIMEOUT="1")
    with RtdashServer(upstream.url, TEST_ENCRYPTION_KEY, server="uvicorn", **env) as server:
        yield server


def test_it_answers_503_envelopes_while_the_database_is_down(outage_server):
    headers = {"X-API-Key": "rtd_" + "x" * 40}
    with httpx.Client(base_url=outage_server.url, timeout=30) as client:
        answers = {
            "/v1/run": client.post("/v1/run", json={"agent": "a", "prompt": "p"}, headers=headers),
            "/v1/agents": client.get("/v1/agents", headers=headers),
            "/api/usage": client.get("/api/usage", headers=headers),
        }
        # A session cookie makes the page read the session table.
        page = client.get("/login/", headers={"Cookie": "sessionid=" + "a" * 32})
    for path, answer in answers.items():
        assert answer.status_code == 503, path
        assert answer.headers["content-type"] == "application/json", path
        assert answer.json()["error"]["code"] == "unavailable", path
        assert answer.headers["retry-after"] == "5", path
    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert "Service unavailable" in page.text
    log = outage_server.log()
    assert "Traceback" not in log
    # The maintenance thread's failed rounds: one line (a minute), not a traceback each.
    assert log.count("rtdash maintenance round failed: the database is unavailable") == 1
    for path in ("/v1/run", "/v1/agents", "/api/usage", "/login/"):
        assert len(re.findall(rf"Database unavailable: \w+ {path} answered 503", log)) == 1
    # That line is each request's whole log: Django does not repeat it.
    assert "Service Unavailable:" not in log


# --- Item 1: a bounded pool -----------------------------------------------------------------


@on_postgresql
def test_a_request_that_cannot_get_a_pooled_connection_gets_a_clean_503(upstream):
    env = production(
        RTDASH_DB_POOL_SIZE="1", RTDASH_DB_POOL_TIMEOUT="0.5", RTDASH_REAPER_INTERVAL="0"
    )
    from runs.models import GatewayToken

    with (
        RtdashServer(upstream.url, TEST_ENCRYPTION_KEY, server="uvicorn", **env) as server,
        psycopg.connect(live.test_database_url()) as locker,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        # A gateway request blocks on a locked table while holding the worker's one connection.
        locker.execute(f"LOCK TABLE {GatewayToken._meta.db_table} IN ACCESS EXCLUSIVE MODE")
        blocked: list[httpx.Response] = []
        gateway_call = threading.Thread(
            target=lambda: blocked.append(
                client.get("/v1/agents", headers={"X-API-Key": "rtd_" + "x" * 40})
            )
        )
        gateway_call.start()
        _wait_for_lock_waiter(locker)
        page = client.get("/login/", headers={"Cookie": "sessionid=" + "a" * 32})
        locker.rollback()  # releases the lock
        gateway_call.join(30)
        log = server.log()
    assert page.status_code == 503
    assert "Service unavailable" in page.text
    assert blocked[0].status_code == 401  # it waited for the lock, then carried on
    assert "PoolTimeout" in log


def _wait_for_lock_waiter(connection: psycopg.Connection) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # Inside the locker's transaction PostgreSQL keeps the first snapshot of the activity
        # statistics; clear it so each look sees the waiters as they are now.
        connection.execute("SELECT pg_stat_clear_snapshot()")
        waiting = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ).fetchone()[0]
        if waiting:
            return
        time.sleep(0.05)
    raise AssertionError("the gateway request never waited for the lock")


@on_postgresql
def test_a_burst_never_opens_more_connections_than_the_pool(upstream):
    pool_size = 3
    worker = f"rtdash-burst-{secrets.token_hex(4)}"
    env = production(RTDASH_DB_POOL_SIZE=str(pool_size), RTDASH_DB_POOL_TIMEOUT="2")
    env["PGAPPNAME"] = worker
    with RtdashServer(upstream.url, TEST_ENCRYPTION_KEY, server="uvicorn", **env) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            cookie, token = _login_form(client)
        seen: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                seen.append(postgres_connections(worker))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            statuses = asyncio.run(_burst(server.url, cookie, token, healthz=100, logins=30))
        finally:
            stop.set()
            sampler.join()
    assert 500 not in statuses, statuses
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses.count(200) > 0
    assert max(seen) > 0  # the sampler does see the worker's connections
    assert max(seen) <= pool_size, f"saw {max(seen)} connections with a pool of {pool_size}"


async def _burst(url: str, cookie: str, token: str, *, healthz: int, logins: int) -> list[int]:
    form = {"username": "nobody", "password": "wrong", "csrfmiddlewaretoken": token}
    headers = {"Cookie": f"csrftoken={cookie}"}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        requests = [client.get("/healthz") for _ in range(healthz)]
        requests += [client.post("/login/", data=form, headers=headers) for _ in range(logins)]
        answers = await asyncio.gather(*requests)
    return [answer.status_code for answer in answers]
