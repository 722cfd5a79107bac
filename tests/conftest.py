"""Shared fixtures: the personas, their teams, and the real simulator on loopback.

alice owns team acme, bob is a member of acme, victor is a viewer in acme, and charlie owns
globex — the outsider who must never see anything of acme's.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from cryptography.fernet import Fernet

from runs.core.ratelimit import CacheUnavailable
from simulator.testing import SimulatorServer

# One encryption key for the whole run, so stored keys stay decryptable across tests.
TEST_ENCRYPTION_KEY = Fernet.generate_key().decode()
ACME_KEY = "rt_test_demo"
GLOBEX_KEY = "rt_test_other"
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _encryption_keys(settings):
    settings.RTDASH_ENCRYPTION_KEYS = TEST_ENCRYPTION_KEY


def _clear_cache() -> None:
    """Empty rtdash's cache. On Redis only rtdash's keys go: a FLUSHDB would also wipe the
    channel layer's groups, which share the database."""
    from django.core.cache import cache

    if cache.__class__.__name__ == "RedisCache":
        client = cache._cache.get_client(write=True)
        for key in client.scan_iter(match=f"{cache.key_prefix}:*", count=1000):
            client.delete(key)
    else:
        cache.clear()


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Rate-limit and throttle counters must not leak from one test into the next (with
    REDIS_URL set they live in Redis and would outlive the test process)."""
    _clear_cache()
    yield
    # A test that pointed the cache at a dead Redis on purpose leaves nothing to clear.
    with contextlib.suppress(CacheUnavailable):
        _clear_cache()


@pytest.fixture(scope="session", autouse=True)
def _close_sync_thread_connections(django_db_setup, django_db_blocker):
    """Before the test database is dropped, close the connections that asgiref's shared sync
    thread opened (sync_to_async outside a request: the frame writer, finish_run, consumers).
    pytest-django closes only the main thread's, and PostgreSQL refuses to drop a database
    that a session still uses."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    with django_db_blocker.unblock():
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)


@pytest.fixture(scope="session")
def simulator():
    """The RunTools simulator as a real HTTP server in its own process."""
    with SimulatorServer(keys=(ACME_KEY, GLOBEX_KEY)) as server:
        yield server


@pytest.fixture
def upstream(settings, simulator):
    """Point rtdash at the simulator for this test."""
    settings.RUNTOOLS_API_URL = simulator.url
    return simulator


def _user(django_user_model, username: str):
    return django_user_model.objects.create_user(username, f"{username}@example.com", PASSWORD)


@pytest.fixture
def acme(db):
    from runs.models import Team

    return Team.objects.create(slug="acme", name="Acme")


@pytest.fixture
def globex(db):
    from runs.models import Team

    return Team.objects.create(slug="globex", name="Globex")


def _member(django_user_model, username, team, role):
    from runs.models import Membership

    user = _user(django_user_model, username)
    Membership.objects.create(user=user, team=team, role=role)
    return user


@pytest.fixture
def alice(django_user_model, acme):
    return _member(django_user_model, "alice", acme, "owner")


@pytest.fixture
def bob(django_user_model, acme):
    return _member(django_user_model, "bob", acme, "member")


@pytest.fixture
def victor(django_user_model, acme):
    return _member(django_user_model, "victor", acme, "viewer")


@pytest.fixture
def charlie(django_user_model, globex):
    return _member(django_user_model, "charlie", globex, "owner")


def _store_key(team, plaintext):
    from runs.models import RunToolsKey

    key = RunToolsKey(team=team, label="default", is_default=True)
    key.set_secret(plaintext)
    key.save()
    return key


@pytest.fixture
def acme_key(acme):
    return _store_key(acme, ACME_KEY)


@pytest.fixture
def globex_key(globex):
    return _store_key(globex, GLOBEX_KEY)


@pytest.fixture
def acme_token(acme, alice):
    """(GatewayToken, plaintext) for acme."""
    from runs.models import GatewayToken

    return GatewayToken.issue(acme, "ci", created_by=alice)


@pytest.fixture
def globex_token(globex, charlie):
    from runs.models import GatewayToken

    return GatewayToken.issue(globex, "ci", created_by=charlie)


# --- Teams, keys, tokens and the audit log ------------------------------------------------


@pytest.fixture
def dave(django_user_model, db):
    """A user with an account and no team yet, to be added to one."""
    return _user(django_user_model, "dave")


@pytest.fixture
def operator(django_user_model, db):
    """A superuser, for the Django admin."""
    return django_user_model.objects.create_superuser("operator", "op@example.com", PASSWORD)


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """A fast hasher: the default spends ~0.3 s per password, which is the point in production
    and most of the time of a test that makes five users."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- Websockets ---------------------------------------------------------------------------


@pytest.fixture
def application(settings):
    """rtdash.asgi's application, for websocket tests (tests/sockets.py's Socket)."""
    # The ASGI module refuses laptop settings unless DEBUG is on (tests run with it off), and
    # starts a maintenance thread unless the reaper interval is 0.
    settings.DEBUG = True
    settings.RTDASH_REAPER_INTERVAL = 0
    from rtdash.asgi import application

    settings.DEBUG = False

    return application


@pytest.fixture
async def empty_channel_layer():
    """Readers settled and the channel layer flushed after the test. Opt in per module
    (`pytest.mark.usefixtures`): a test that kills the layer's Redis could not flush it."""
    yield
    from channels.layers import get_channel_layer

    from runs.gateway.views import settle

    await settle()
    await get_channel_layer().flush()


@pytest.fixture
def private_redis():
    """A redis-server of the test's own (tests/redis_servers.py), killed at the end."""
    import shutil

    from tests.redis_servers import PrivateRedis

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis().start()
    yield server
    server.kill()


# --- Browsers ------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser():
    """Debian's Chromium under Playwright, headless (browsers cannot be downloaded here)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            headless=True,
        )
        yield chromium
        chromium.close()


@pytest.fixture
def gateway(async_client, upstream, acme_key, acme_token):
    """Call rtdash's gateway as a script would: same body, an rtdash token as the key."""
    _token, plaintext = acme_token

    async def call(method: str, path: str, body=None, headers=None, raw: bytes | None = None):
        sent_headers = {"X-API-Key": plaintext, **(headers or {})}
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
        response = await async_client.generic(
            method, path, raw or b"", content_type="application/json", headers=sent_headers
        )
        if not response.streaming:
            from runs.pipeline.start import settle

            await settle()
        return response

    return call
