"""The team's RunTools key as the gateway checks it before recording a run."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"agent": "support-chat", "prompt": "Hello", "stream": False}


async def test_a_key_that_no_configured_key_opens_refuses_the_run_before_it_is_recorded(
    gateway, settings
):
    settings.RTDASH_ENCRYPTION_KEYS = Fernet.generate_key().decode()
    response = await gateway("POST", "/v1/run", BODY)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "runtools_key_unreadable"
    assert await Run.objects.acount() == 0


async def test_a_key_that_opened_before_is_refused_once_the_keys_change(gateway, settings):
    """The check's answer is kept per key ciphertext, but only under the keys that gave it."""
    assert (await gateway("POST", "/v1/run", BODY)).status_code == 200
    settings.RTDASH_ENCRYPTION_KEYS = Fernet.generate_key().decode()
    response = await gateway("POST", "/v1/run", BODY)
    assert response.json()["error"]["code"] == "runtools_key_unreadable"
    assert await Run.objects.acount() == 1


async def test_adding_a_new_first_key_keeps_the_stored_key_readable(gateway, settings):
    settings.RTDASH_ENCRYPTION_KEYS = ",".join(
        [Fernet.generate_key().decode(), settings.RTDASH_ENCRYPTION_KEYS]
    )
    assert (await gateway("POST", "/v1/run", BODY)).status_code == 200
