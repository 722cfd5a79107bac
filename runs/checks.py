"""Refuse to run a production (debug off) rtdash with settings only safe on a laptop.

Registered as ordinary system checks so `manage.py` commands report them, and run again by
rtdash/asgi.py so an ASGI server refuses to start with them.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured

SAFETY_TAG = "rtdash_safety"


@register(SAFETY_TAG)
def check_production_safety(app_configs=None, **kwargs) -> list[Error]:
    if settings.DEBUG:
        return []
    errors = []
    if settings.SECRET_KEY == settings.INSECURE_DEV_SECRET_KEY or len(settings.SECRET_KEY) < 40:
        errors.append(
            Error(
                "RTDASH_SECRET_KEY is the development default or too short.",
                hint="Set RTDASH_SECRET_KEY to a random string of 50+ characters.",
                id="rtdash.E001",
            )
        )
    if "*" in settings.ALLOWED_HOSTS:
        errors.append(
            Error(
                "RTDASH_ALLOWED_HOSTS contains '*'.",
                hint="List the host names rtdash is served under, comma-separated.",
                id="rtdash.E002",
            )
        )
    # It lives in one process's memory.
    if settings.CHANNEL_LAYERS["default"]["BACKEND"].endswith("InMemoryChannelLayer"):
        errors.append(
            Error(
                "The in-memory channel layer cannot reach across workers.",
                hint="Set REDIS_URL (for example redis://127.0.0.1:6379/0).",
                id="rtdash.E003",
            )
        )
    from runs.core.crypto import _fernet

    try:
        _fernet()
    except ImproperlyConfigured as error:
        errors.append(Error(str(error), id="rtdash.E004"))
    return errors


@register(SAFETY_TAG)
def check_gateway_handler_matches_django(app_configs=None, **kwargs) -> list[Error]:
    """rtdash/gateway_handler.py copies Django's ASGI request handling; on a Django whose
    copied methods changed, the copy may miss what the change added (debug on or off)."""
    from rtdash.gateway_handler import drifted_django_methods

    drifted = drifted_django_methods()
    if not drifted:
        return []
    return [
        Error(
            f"The /v1/ gateway handler was written for other versions of {', '.join(drifted)}.",
            hint="Compare them with rtdash/gateway_handler.py, update the copy and its "
            "COPIED_FROM_DJANGO digests, or install the Django version in pyproject.toml.",
            id="rtdash.E005",
        )
    ]
