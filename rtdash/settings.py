"""rtdash settings: one file, configured by environment variables, safe laptop defaults.

Every variable is listed in docs/configuration.md. With RTDASH_DEBUG off, `runs.checks` refuses the
defaults that are only safe on a laptop.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from rtdash.env import envbool, envfloat, envint, envlist, envstr, envurl

BASE_DIR = Path(__file__).resolve().parent.parent

# The value checks.py looks for: it is fine on a laptop and refused in production.
INSECURE_DEV_SECRET_KEY = "rtdash-insecure-development-key-do-not-use-in-production"  # noqa: S105

DEBUG = envbool("RTDASH_DEBUG", True)
SECRET_KEY = envstr("RTDASH_SECRET_KEY", INSECURE_DEV_SECRET_KEY)
ALLOWED_HOSTS = envlist("RTDASH_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
# Checks an operator has decided to live with, e.g. rtdash.E003 for a deliberate single-worker
# install without Redis (the in-process channel layer cannot reach a second worker).
SILENCED_SYSTEM_CHECKS = envlist("RTDASH_SILENCED_CHECKS", "")
CSRF_TRUSTED_ORIGINS = envlist("RTDASH_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "runs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "rtdash.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # A database that cannot be reached (down, or every pooled connection busy) answers 503.
    "rtdash.unavailable.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "rtdash.urls"
ASGI_APPLICATION = "rtdash.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "runs.teams.context_processors.team",
                "runs.pipeline.budgets.banner_context",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
DATABASE_URL = envstr("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
# The most PostgreSQL connections one worker opens, and how long a request waits for one of
# them before it is answered 503. Workers x pool size must stay below the server's
# max_connections minus headroom (docs/security.md).
RTDASH_DB_POOL_SIZE = envint("RTDASH_DB_POOL_SIZE", 10, minimum=1)
RTDASH_DB_POOL_TIMEOUT = envfloat("RTDASH_DB_POOL_TIMEOUT", 10.0, minimum=0.1)
try:
    _database = dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
except ValueError as error:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {error}") from None
if _database["ENGINE"] == "django.db.backends.postgresql":
    # Under ASGI each request's sync work may run on a thread of its own, and a persistent
    # connection is per thread: nothing bounded them (200 concurrent requests opened ~100
    # connections from one worker and held them). A pool bounds them; Django's pool needs
    # CONN_MAX_AGE 0, and health checks become the pool's check on checkout.
    _database["CONN_MAX_AGE"] = 0
    _database["OPTIONS"] = {
        **_database.get("OPTIONS", {}),
        "pool": {
            "min_size": 1,
            "max_size": RTDASH_DB_POOL_SIZE,
            "timeout": RTDASH_DB_POOL_TIMEOUT,
            "name": f"rtdash-{os.getpid()}",
        },
    }
elif _database["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the dashboard read while a run is being written; synchronous=NORMAL keeps every
    # committed run across an application crash while skipping an fsync per commit, and
    # IMMEDIATE transactions avoid "database is locked" upgrades under concurrent writers.
    _database["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file, not memory, so live servers in other processes can share the test database.
    # One per test process, so two suites running at once never share a file.
    _database["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-db-{os.getpid()}.sqlite3")}
    (BASE_DIR / "var").mkdir(exist_ok=True)
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer ------------------------------------------------------------------------
REDIS_URL = envstr("REDIS_URL", "")
# The longest a run may stream before it is cut (`interrupted`, `max_duration`).
RTDASH_MAX_RUN_SECONDS = envint("RTDASH_MAX_RUN_SECONDS", 1800, minimum=1)
# Each worker stamps its live runs every 10 s; a run unstamped this long has lost its reader.
RTDASH_REAPER_STALE_SECONDS = envint("RTDASH_REAPER_STALE_SECONDS", 60, minimum=15)
# How often each worker looks for such runs (0 turns the worker's reaper off).
RTDASH_REAPER_INTERVAL = envint("RTDASH_REAPER_INTERVAL", 30, minimum=0)
# Experiments: runs at a time per experiment, and across all experiments of one worker.
RTDASH_EXPERIMENT_CONCURRENCY = envint("RTDASH_EXPERIMENT_CONCURRENCY", 2, minimum=1)
RTDASH_EXPERIMENT_PROCESS_CONCURRENCY = envint(
    "RTDASH_EXPERIMENT_PROCESS_CONCURRENCY", 8, minimum=1
)
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"REDIS_URL must be a redis:// URL, got {REDIS_URL!r}")
    # The pub/sub layer: with channels_redis 4.3 and redis-py 8, the list-based
    # RedisChannelLayer made a message wait for its poll when two coroutines of one process
    # were receiving, and ran out of connections at 200 streams (docs/performance.md). Pub/sub
    # keeps no backlog: a socket that misses frames catches up from the database and the run's
    # reader (runs/playground/relay.py).
    # Pub/sub channels ignore the database number in REDIS_URL: without a prefix of their own,
    # two installs (or a test run) on one Redis server would hear each other's run groups.
    _redis_url = urlsplit(REDIS_URL)
    _redis_database = (
        parse_qs(_redis_url.query).get("db", ["0"])[0]
        if _redis_url.scheme == "unix"
        else _redis_url.path.strip("/") or "0"
    )
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": envstr("RTDASH_CHANNEL_PREFIX", f"rtdash.db{_redis_database}"),
            },
        }
    }
else:
    # One worker: Channels' own in-memory layer. The relay hands frames to the sockets of its
    # own worker directly, so this layer carries only a few messages per run (see the
    # playground docs, Channel layers). Capacity: 5000 messages per channel, as before.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 5000, "expiry": 60},
        }
    }

# --- Upstream (RunTools) ------------------------------------------------------------------
RUNTOOLS_API_URL = envurl("RUNTOOLS_API_URL", "https://api.runtools.ai/v1")
RTDASH_UPSTREAM_CONNECT_TIMEOUT = envfloat("RTDASH_UPSTREAM_CONNECT_TIMEOUT", 5.0, minimum=0.1)
# Idle time between two reads of the upstream response; a hung upstream fails after this.
RTDASH_UPSTREAM_READ_TIMEOUT = envfloat("RTDASH_UPSTREAM_READ_TIMEOUT", 120.0, minimum=0.1)
RTDASH_UPSTREAM_MAX_CONNECTIONS = envint("RTDASH_UPSTREAM_MAX_CONNECTIONS", 200, minimum=1)
# RunTools' billing lives on its own host; the same keys and envelopes.
RUNTOOLS_BILLING_URL = envurl("RUNTOOLS_BILLING_URL", "https://billing.runtools.ai/v1")
# A billing or run-lookup call that takes longer fails in plain words rather than hold a page.
RTDASH_BILLING_TIMEOUT = envfloat("RTDASH_BILLING_TIMEOUT", 10.0, minimum=0.1)
# Following runs that answered registered/dispatched (or were cut off) to their end: the first
# lookup after this many seconds, doubling up to the maximum; given up after so many lookups
# or once the run is this old; at most a batch of runs per round, each leased to one worker.
RTDASH_FOLLOW_FIRST_DELAY = envfloat("RTDASH_FOLLOW_FIRST_DELAY", 5.0, minimum=0)
RTDASH_FOLLOW_MAX_DELAY = envfloat("RTDASH_FOLLOW_MAX_DELAY", 600.0, minimum=0)
RTDASH_FOLLOW_MAX_ATTEMPTS = envint("RTDASH_FOLLOW_MAX_ATTEMPTS", 20, minimum=1)
RTDASH_FOLLOW_MAX_AGE_SECONDS = envint("RTDASH_FOLLOW_MAX_AGE_SECONDS", 86400, minimum=60)
RTDASH_FOLLOW_BATCH = envint("RTDASH_FOLLOW_BATCH", 50, minimum=1)
RTDASH_FOLLOW_LEASE_SECONDS = envint("RTDASH_FOLLOW_LEASE_SECONDS", 120, minimum=5)
RTDASH_ENCRYPTION_KEYS = envstr("RTDASH_ENCRYPTION_KEYS", "")
RTDASH_ENCRYPTION_KEY_FILE = BASE_DIR / ".rtdash-encryption-key"

# --- Gateway ------------------------------------------------------------------------------
RTDASH_MAX_BODY_BYTES = envint("RTDASH_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
RTDASH_CANCEL_ON_DISCONNECT = envbool("RTDASH_CANCEL_ON_DISCONNECT", False)
DATA_UPLOAD_MAX_MEMORY_SIZE = RTDASH_MAX_BODY_BYTES

# --- Auth and sessions ----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"
RTDASH_LOGIN_ATTEMPTS_PER_15_MINUTES = envint("RTDASH_LOGIN_ATTEMPTS_PER_15_MINUTES", 10, minimum=1)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_SSL_REDIRECT = envbool("RTDASH_SSL_REDIRECT", not DEBUG)
# Load balancers probe workers over plain HTTP on their private address and count a redirect as
# a failure; the probes disclose nothing (docs/security.md, "Liveness and readiness").
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = 0 if DEBUG else envint("RTDASH_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if not DEBUG else None
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- Caches ---------------------------------------------------------------------------------
# Short-lived data: agent lists, login throttling, per-token rate limits. With Redis the
# counters are shared by every worker; without it each process counts on its own.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "rtdash",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
RTDASH_SERVE_STATIC = envbool("RTDASH_SERVE_STATIC", True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "filters": {
        "redis_outage": {"()": "rtdash.logs.RepeatedConnectionErrors"},
        "database_outage": {"()": "rtdash.unavailable.RepeatedDatabaseErrors"},
    },
    "root": {"handlers": ["console"], "level": envstr("RTDASH_LOG_LEVEL", "INFO")},
    "loggers": {
        # httpx logs every request line at INFO; rtdash logs what matters itself.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # A traceback a second while Redis is down, otherwise (rtdash.logs).
        "channels_redis.pubsub": {"filters": ["redis_outage"]},
        # A traceback every maintenance round while the database is down, otherwise.
        "runs.pipeline.reaper": {"filters": ["database_outage"]},
    },
}

# --- Operations: Prometheus metrics and alerts (runs/operations, docs/operations.md) --------
# GET /metrics is off (404) unless a token is set; then it needs `Authorization: Bearer <it>`.
RTDASH_METRICS_TOKEN = envstr("RTDASH_METRICS_TOKEN", "")
# How long a scrape's deployment-wide counters (read from the rollups) are reused.
RTDASH_METRICS_CACHE_SECONDS = envfloat("RTDASH_METRICS_CACHE_SECONDS", 5.0)
# Beyond this many agents per team, the rest are counted under agent="other".
RTDASH_METRICS_MAX_AGENTS = envint("RTDASH_METRICS_MAX_AGENTS", 20, minimum=1)
# Prometheus scrapes each worker on its own address, on a private network, where there is no
# TLS to redirect to: the bearer token guards /metrics, not the scheme.
SECURE_REDIRECT_EXEMPT = [*SECURE_REDIRECT_EXEMPT, r"^metrics$"]
# Alert e-mail: SMTP from the environment (Django's e-mail framework).
EMAIL_HOST = envstr("RTDASH_EMAIL_HOST", "localhost")
EMAIL_PORT = envint("RTDASH_EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = envstr("RTDASH_EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = envstr("RTDASH_EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("RTDASH_EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = envint("RTDASH_EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = envstr("RTDASH_DEFAULT_FROM_EMAIL", "rtdash@localhost")
# How often each worker evaluates the alert rules and sends what is due (0: never; then run
# `manage.py alerts` from cron). Failed deliveries are retried after RETRY, twice that, four times…
# seconds, at most ATTEMPTS times in all.
RTDASH_ALERT_INTERVAL = envint("RTDASH_ALERT_INTERVAL", 60, minimum=0)
RTDASH_ALERT_RETRY_SECONDS = envfloat("RTDASH_ALERT_RETRY_SECONDS", 30.0)
RTDASH_ALERT_ATTEMPTS = envint("RTDASH_ALERT_ATTEMPTS", 5, minimum=1)
