"""Security, tested: who reaches which page, CSRF, sessions, login throttling, a canary key
that must never leak, and production settings.

ROUTES is the access matrix. A feature adds its pages by appending `Route(...)`s; the tests
below walk every route as every persona, check the wrong method, and check CSRF.
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from types import SimpleNamespace

import pytest
from asgiref.sync import async_to_sync
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.contrib import admin
from django.db import connection
from django.test import Client
from django.urls import reverse

from runs.core.crypto import decrypt_for_upstream
from runs.core.upstream import UpstreamError, call
from runs.models import AuditEvent, GatewayToken, Membership, RunToolsKey
from tests.conftest import PASSWORD

BASE_DIR = Path(__file__).resolve().parents[2]
LOGIN = "→login"  # expected: a redirect to the login page
PERSONAS = ("alice", "bob", "victor", "charlie", "anonymous")

pytestmark = pytest.mark.usefixtures("fast_passwords")


def expect(alice, bob, victor, charlie, anonymous=LOGIN) -> dict[str, int | str]:
    """What each persona gets: alice owns acme, bob is a member, victor a viewer, charlie
    owns globex (he sees his own team's pages, never acme's objects)."""
    return {
        "alice": alice,
        "bob": bob,
        "victor": victor,
        "charlie": charlie,
        "anonymous": anonymous,
    }


def _no_args(world: SimpleNamespace) -> tuple:
    return ()


def _no_data(world: SimpleNamespace) -> dict:
    return {}


@dataclass(frozen=True)
class Route:
    name: str
    method: str = "get"
    expect: Mapping[str, int | str] = field(default_factory=dict)
    args: Callable[[SimpleNamespace], tuple] = _no_args
    data: Callable[[SimpleNamespace], dict] = _no_data
    # For views that accept both GET and POST.
    wrong_method: str | None = None

    def url(self, world: SimpleNamespace) -> str:
        return reverse(self.name, args=self.args(world))

    def wrong(self) -> str:
        return self.wrong_method or ("post" if self.method == "get" else "get")

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.name}"


def _bob(world):
    return (world.bob_membership.pk,)


def _acme_key(world):
    return (world.acme_key.pk,)


def _acme_token(world):
    return (world.acme_token.pk,)


ROUTES: list[Route] = [
    Route("overview", expect=expect(200, 200, 200, 200)),
    Route("login", expect=expect(302, 302, 302, 302, anonymous=200), wrong_method="put"),
    Route("logout", "post", expect=expect(302, 302, 302, 302, anonymous=302)),
    Route("team_switch", expect=expect(200, 200, 200, 200), wrong_method="put"),
    Route(
        "team_switch",
        "post",
        expect=expect(302, 302, 302, 404),
        data=lambda w: {"team": w.acme.pk},
        wrong_method="put",
    ),
    Route("team_settings", expect=expect(200, 200, 200, 200)),
    Route("team_audit", expect=expect(200, 404, 404, 200)),
    Route(
        "member_add",
        "post",
        expect=expect(302, 404, 404, 302),
        data=lambda w: {"username": "dave", "role": "member"},
    ),
    Route(
        "member_role",
        "post",
        expect=expect(302, 404, 404, 404),
        args=_bob,
        data=lambda w: {"role": "admin"},
    ),
    Route("member_remove", "post", expect=expect(302, 404, 404, 404), args=_bob),
    Route(
        "key_add",
        "post",
        expect=expect(302, 404, 404, 302),
        data=lambda w: {"label": "spare", "key": "rt_test_spare_key_1234"},
    ),
    Route("key_test", "post", expect=expect(302, 404, 404, 404), args=_acme_key),
    Route("key_default", "post", expect=expect(302, 404, 404, 404), args=_acme_key),
    Route("key_revoke", "post", expect=expect(302, 404, 404, 404), args=_acme_key),
    Route(
        "token_add",
        "post",
        expect=expect(200, 404, 404, 200),
        data=lambda w: {"name": "nightly"},
    ),
    Route("token_revoke", "post", expect=expect(302, 404, 404, 404), args=_acme_token),
]


@pytest.fixture
def world(alice, bob, victor, charlie, dave, acme, globex, acme_key, globex_key, acme_token,
          globex_token, upstream):  # fmt: skip
    return SimpleNamespace(
        alice=alice,
        bob=bob,
        victor=victor,
        charlie=charlie,
        acme=acme,
        globex=globex,
        acme_key=acme_key,
        acme_token=acme_token[0],
        bob_membership=Membership.objects.get(user=bob, team=acme),
    )


def _client_for(world: SimpleNamespace, persona: str, **kwargs) -> Client:
    client = Client(**kwargs)
    if persona != "anonymous":
        client.force_login(getattr(world, persona))
    return client


def _acme_state(world: SimpleNamespace) -> tuple:
    """Everything about acme that a page could change."""
    acme = world.acme
    return (
        sorted(Membership.objects.filter(team=acme).values_list("user__username", "role")),
        sorted(
            RunToolsKey.objects.filter(team=acme).values_list(
                "id", "label", "is_default", "revoked_at", "ciphertext"
            )
        ),
        sorted(GatewayToken.objects.filter(team=acme).values_list("id", "name", "revoked_at")),
    )


MATRIX = [(route, persona) for route in ROUTES for persona in PERSONAS]


@pytest.mark.parametrize(("route", "persona"), MATRIX, ids=[f"{r}-{p}" for r, p in MATRIX])
def test_it_answers_each_persona_as_expected(world, route, persona):
    client = _client_for(world, persona)
    before = _acme_state(world)
    response = getattr(client, route.method)(route.url(world), route.data(world))

    expected = route.expect[persona]
    if expected == LOGIN:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login") + "?next=")
    else:
        assert response.status_code == expected
    if persona != "alice":
        # Nobody but acme's owner changed anything of acme's, whatever the answer was.
        assert _acme_state(world) == before
    if persona == "charlie" and response.status_code == 200:
        page = response.content.decode()
        for marker in ("Acme", "alice", world.acme_key.masked, world.acme_token.prefix):
            assert marker not in page


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_it_rejects_the_wrong_method(world, route):
    client = _client_for(world, "alice")
    response = getattr(client, route.wrong())(route.url(world), route.data(world))
    assert response.status_code == 405


UNSAFE = [route for route in ROUTES if route.method == "post"]


@pytest.mark.parametrize("route", UNSAFE, ids=str)
def test_it_enforces_csrf(world, route):
    client = _client_for(world, "alice", enforce_csrf_checks=True)
    url = route.url(world)
    assert client.post(url, route.data(world)).status_code == 403

    # The same request with the token from a page is accepted: the 403 was about CSRF.
    client.get(reverse("team_settings"))
    token = client.cookies[django_settings.CSRF_COOKIE_NAME].value
    response = client.post(url, route.data(world), HTTP_X_CSRFTOKEN=token)
    assert response.status_code not in (403, 404)


def test_it_enforces_csrf_on_login(alice):
    client = Client(enforce_csrf_checks=True)
    credentials = {"username": "alice", "password": PASSWORD}
    assert client.post(reverse("login"), credentials).status_code == 403

    client.get(reverse("login"))
    credentials["csrfmiddlewaretoken"] = client.cookies[django_settings.CSRF_COOKIE_NAME].value
    assert client.post(reverse("login"), credentials).status_code == 302


# --- Sessions and logging in ------------------------------------------------------------


def test_it_rotates_the_session_at_login(client, alice):
    planted = client.session
    planted["probe"] = "set before login"
    planted.save()
    before = planted.session_key

    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})

    assert response.status_code == 302
    after = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    assert after != before
    store = import_module(django_settings.SESSION_ENGINE).SessionStore
    assert not store().exists(before)
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_it_throttles_failed_logins(client, alice, settings):
    settings.RTDASH_LOGIN_ATTEMPTS_PER_15_MINUTES = 3
    for _ in range(3):
        response = client.post(reverse("login"), {"username": "alice", "password": "guess"})
        assert response.status_code == 200

    # Even the right password is refused now, with a message that says why.
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})

    assert response.status_code == 429
    assert "Too many failed login attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="login_failed", actor_label="alice").count() == 3
    throttled = AuditEvent.objects.get(action="login_throttled")
    assert throttled.actor_label == "alice"
    assert throttled.ip == "127.0.0.1"


def test_it_throttles_per_username_and_address(client, alice, bob, settings):
    settings.RTDASH_LOGIN_ATTEMPTS_PER_15_MINUTES = 2
    for _ in range(2):
        client.post(reverse("login"), {"username": "alice", "password": "guess"})

    # bob from the same address, and alice from another address, are not locked out.
    response = Client().post(reverse("login"), {"username": "bob", "password": PASSWORD})
    assert response.status_code == 302
    response = Client(REMOTE_ADDR="10.0.0.7").post(
        reverse("login"), {"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 302


def test_a_successful_login_resets_the_failures(client, alice, settings):
    settings.RTDASH_LOGIN_ATTEMPTS_PER_15_MINUTES = 3
    for _ in range(2):
        client.post(reverse("login"), {"username": "alice", "password": "guess"})
    assert (
        client.post(reverse("login"), {"username": "alice", "password": PASSWORD}).status_code
        == 302
    )
    client.post(reverse("logout"))
    for _ in range(2):
        client.post(reverse("login"), {"username": "alice", "password": "guess"})
    assert (
        client.post(reverse("login"), {"username": "alice", "password": PASSWORD}).status_code
        == 302
    )


def test_the_admin_login_is_throttled_too(client, operator, settings):
    settings.RTDASH_LOGIN_ATTEMPTS_PER_15_MINUTES = 2
    url = reverse("admin:login")
    for _ in range(2):
        client.post(url, {"username": "operator", "password": "guess"})

    response = client.post(url, {"username": "operator", "password": PASSWORD})

    assert "Too many failed login attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="login_throttled", actor_label="operator").exists()


# --- The canary key ---------------------------------------------------------------------

CANARY = "rt_live_CANARY1234567890abcdefXYZ9"
# What must never be seen: the key minus the part the UI may show (rt_live_…XYZ9).
CANARY_SECRET = "CANARY1234567890abcdef"


def _leaks(text: str) -> bool:
    return CANARY_SECRET in text or CANARY in text


def _admin_pages(operator) -> list:
    client = Client()
    client.force_login(operator)
    responses = [client.get(reverse("admin:index"))]
    for model in admin.site._registry:
        meta = model._meta
        responses.append(
            client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        )
        for obj in model.objects.all()[:5]:
            url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
            responses.append(client.get(url))
    return responses


def _database_text() -> list[tuple[str, str, str]]:
    """Every value in every table as text, with session data decoded."""
    store = import_module(django_settings.SESSION_ENGINE).SessionStore()
    values = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            columns = [column[0] for column in cursor.description]
            for row in cursor.fetchall():
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, bytes | memoryview):
                        text = bytes(value).decode(errors="replace")
                    else:
                        text = str(value)
                    if (table, column) == ("django_session", "session_data"):
                        text = repr(store.decode(text))
                    values.append((table, column, text))
    return values


def test_a_canary_key_never_leaks(client, alice, operator, upstream, settings, caplog):
    caplog.set_level(logging.DEBUG)
    client.force_login(alice)
    htmx = {"HTTP_HX_REQUEST": "true"}
    pages = []

    # Stored through the settings page, then shown again after a form error.
    pages.append(client.post(reverse("key_add"), {"label": "canary", "key": CANARY}, follow=True))
    key = RunToolsKey.objects.get(label="canary")
    bad = {"label": "x" * 101, "key": CANARY}
    pages.append(client.post(reverse("key_add"), bad))
    pages.append(client.post(reverse("key_add"), bad, **htmx))
    # Tested: the simulator refuses it, and then nothing answers at all.
    pages.append(client.post(reverse("key_test", args=[key.pk]), follow=True))
    pages.append(client.post(reverse("key_test", args=[key.pk]), **htmx))
    settings.RUNTOOLS_API_URL = "http://127.0.0.1:9/v1"
    pages.append(client.post(reverse("key_test", args=[key.pk]), follow=True))
    pages.append(client.post(reverse("key_default", args=[key.pk]), follow=True))
    pages.append(client.get(reverse("team_settings")))
    pages.append(client.get(reverse("team_audit")))
    pages.extend(_admin_pages(operator))

    assert len(pages) > 15
    for page in pages:
        assert page.status_code == 200, page.request["PATH_INFO"]
        assert not _leaks(page.content.decode()), page.request["PATH_INFO"]
    assert "rt_live_…XYZ9" in pages[0].content.decode()

    for record in caplog.records:
        assert not _leaks(record.getMessage())
        assert not _leaks(str(record.exc_text or ""))

    # Exceptions the outbound call can raise say what went wrong, never with what key.
    for url in ("http://127.0.0.1:9/v1", "ftp://nowhere/v1"):
        settings.RUNTOOLS_API_URL = url
        with pytest.raises(UpstreamError) as raised:
            async_to_sync(call)(decrypt_for_upstream(key.ciphertext), "GET", "/agents")
        assert not _leaks(str(raised.value)) and not _leaks(repr(raised.value))

    # In the database it exists only as ciphertext, which decrypts back to it.
    values = _database_text()
    assert any(table == "django_session" for table, _, _ in values)
    for table, column, text in values:
        assert not _leaks(text), f"{table}.{column}"
    key.refresh_from_db()
    assert decrypt_for_upstream(key.ciphertext) == CANARY


# --- Production settings ----------------------------------------------------------------


def test_check_deploy_reports_nothing_with_production_settings():
    env = {
        "PATH": "/usr/bin:/bin",
        "RTDASH_DEBUG": "0",
        "RTDASH_SECRET_KEY": secrets.token_urlsafe(48)[:60],
        "RTDASH_ALLOWED_HOSTS": "rtdash.example.com",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "RTDASH_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "DEBUG"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert result.stderr == ""
