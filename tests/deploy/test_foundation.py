"""Settings, safety checks, health and the layout."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core import checks

from runs.checks import SAFETY_TAG


def _check_ids(settings) -> set[str]:
    return {m.id for m in checks.run_checks(tags=[SAFETY_TAG])}


def test_it_allows_debug_defaults(settings):
    settings.DEBUG = True
    assert _check_ids(settings) == set()


@pytest.mark.parametrize("layer", ["channels.layers.InMemoryChannelLayer"])
def test_it_refuses_unsafe_production_settings(settings, layer):
    settings.DEBUG = False
    settings.SECRET_KEY = settings.INSECURE_DEV_SECRET_KEY
    settings.ALLOWED_HOSTS = ["*"]
    settings.RTDASH_ENCRYPTION_KEYS = ""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": layer}}
    assert _check_ids(settings) == {"rtdash.E001", "rtdash.E002", "rtdash.E003", "rtdash.E004"}


def test_it_accepts_safe_production_settings(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = "x" * 60
    settings.ALLOWED_HOSTS = ["rtdash.example.com"]
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]},
        }
    }
    assert _check_ids(settings) == set()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RTDASH_DEBUG", "maybe", "RTDASH_DEBUG must be a boolean"),
        ("RTDASH_MAX_RUN_SECONDS", "soon", "RTDASH_MAX_RUN_SECONDS must be a whole number"),
        ("RUNTOOLS_API_URL", "api.runtools.ai", "RUNTOOLS_API_URL must be an http"),
        ("DATABASE_URL", "nonsense://x", "DATABASE_URL is not a database URL"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL must be a redis:// URL"),
        ("RTDASH_UPSTREAM_READ_TIMEOUT", "-1", "RTDASH_UPSTREAM_READ_TIMEOUT must be at least"),
    ],
)
def test_a_bad_variable_is_one_clear_line(variable, value, message):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={"PATH": "/usr/bin:/bin", variable: value},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def _start_asgi(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Import the ASGI application as a server would, in a process with only `env`."""
    return subprocess.run(
        [sys.executable, "-c", "import rtdash.asgi"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_bad_encryption_key_stops_production_startup():
    env = {
        "PATH": "/usr/bin:/bin",
        "RTDASH_DEBUG": "0",
        "RTDASH_SECRET_KEY": "s" * 60,
        "RTDASH_ENCRYPTION_KEYS": "not-a-fernet-key",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    result = _start_asgi(env)
    assert result.returncode != 0
    assert "RTDASH_ENCRYPTION_KEYS: key #1 is not a Fernet key" in result.stderr
    assert "not-a-fernet-key" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("silenced", ["", "rtdash.E003"])
def test_a_single_worker_install_without_redis_starts_only_when_it_says_so(tmp_path, silenced):
    env = {
        "PATH": "/usr/bin:/bin",
        "RTDASH_DEBUG": "0",
        "RTDASH_SECRET_KEY": "s" * 60,
        "RTDASH_ENCRYPTION_KEYS": "mlFSD8cGxeDRgPpQtUmTIC2LDBqjMuYD9Z5wvYcUeGc=",
        "RTDASH_REAPER_INTERVAL": "0",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "RTDASH_SILENCED_CHECKS": silenced,
    }
    result = _start_asgi(env)
    if silenced:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert "The in-memory channel layer cannot reach across workers." in result.stderr


@pytest.mark.django_db
def test_readyz_reports_every_dependency(client, upstream):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": True, "channelLayer": True, "upstream": True}


@pytest.mark.django_db
def test_readyz_is_503_when_upstream_is_down(client, settings):
    settings.RUNTOOLS_API_URL = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["upstream"] is False


@pytest.mark.django_db
def test_healthz_rejects_post(client):
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db
def test_overview_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_overview_shows_the_team(client, alice):
    client.force_login(alice)
    response = client.get("/")
    assert response.status_code == 200
    assert b"Acme" in response.content


@pytest.mark.parametrize(
    ("extra", "prefix"),
    [
        ({"REDIS_URL": "redis://127.0.0.1:6379/3"}, "rtdash.db3"),
        ({"REDIS_URL": "redis://127.0.0.1:6379"}, "rtdash.db0"),
        ({"REDIS_URL": "unix:///run/redis.sock?db=2"}, "rtdash.db2"),
        ({"REDIS_URL": "redis://127.0.0.1:6379/3", "RTDASH_CHANNEL_PREFIX": "blue"}, "blue"),
    ],
)
def test_each_redis_database_gets_its_own_channel_prefix(extra, prefix):
    # Pub/sub ignores the database number: the prefix keeps installs on one server apart.
    show = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.CHANNEL_LAYERS['default']['CONFIG']['prefix'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", show],
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "rtdash.settings", **extra},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == prefix
