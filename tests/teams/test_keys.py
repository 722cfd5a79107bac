"""RunTools keys: stored encrypted, write-only, tested against the simulator, revocable."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.urls import reverse

from runs.core import upstream as upstream_module
from runs.core.crypto import SealedKey, decrypt_for_upstream
from runs.models import AuditEvent, RunToolsKey

pytestmark = pytest.mark.usefixtures("fast_passwords")

HTMX = {"HTTP_HX_REQUEST": "true"}
SPARE = "rt_live_spareSPARE0000key9"


def _add(client, label="spare", key=SPARE, *, headers=None, **fields):
    data = {"label": label, "key": key, **fields}
    return client.post(reverse("key_add"), data, **(headers or {}))


def test_it_stores_a_key_encrypted(client, alice, acme):
    client.force_login(alice)
    response = _add(client)
    assert response.status_code == 302
    assert response["Location"] == reverse("team_settings") + "#keys"

    key = RunToolsKey.objects.get(team=acme)
    assert SPARE not in key.ciphertext
    assert decrypt_for_upstream(key.ciphertext) == SPARE
    assert (key.masked, key.created_by, key.is_default) == ("rt_live_…key9", alice, True)
    event = AuditEvent.objects.get(action="key_added")
    assert (event.team, event.target) == (acme, "spare (rt_live_…key9)")

    page = client.get(reverse("team_settings")).content.decode()
    assert "rt_live_…key9" in page
    assert "Stored key spare (rt_live_…key9). It is the team&#x27;s default key." in page


def test_it_never_prefills_the_key(client, alice, acme):
    client.force_login(alice)
    response = _add(client, label="")
    page = response.content.decode()
    assert response.status_code == 200
    assert "This field is required." in page
    assert 'type="password" name="key"' in page
    assert SPARE not in page
    assert not RunToolsKey.objects.exists()


@pytest.mark.parametrize("bad", ["rt_live_has space_in_it", "rt_live_line\nbreak_in_it", "short"])
def test_it_rejects_a_malformed_key(client, alice, bad):
    client.force_login(alice)
    response = _add(client, key=bad, headers=HTMX)
    page = response.content.decode()
    assert page.startswith('<section id="keys"')
    assert "errorlist" in page
    assert bad not in page
    assert not RunToolsKey.objects.exists()


def test_the_first_key_becomes_the_default_and_later_ones_only_when_asked(client, alice, acme_key):
    client.force_login(alice)
    _add(client, label="second")
    assert RunToolsKey.objects.get(label="second").is_default is False
    _add(client, label="third", make_default="on")
    assert RunToolsKey.objects.get(label="third").is_default is True
    acme_key.refresh_from_db()
    assert acme_key.is_default is False


def test_it_tests_a_working_key(client, alice, acme_key, upstream):
    client.force_login(alice)
    response = client.post(reverse("key_test", args=[acme_key.pk]), **HTMX)
    page = response.content.decode()
    assert page.startswith('<section id="keys"')
    assert "works: RunTools lists 4 agents" in page
    assert "code-assistant" in page
    acme_key.refresh_from_db()
    assert acme_key.last_test_ok is True and acme_key.last_tested_at is not None
    event = AuditEvent.objects.get(action="key_tested")
    assert event.target.startswith("default (rt_test_…demo): works")


def test_it_hands_the_upstream_call_a_sealed_key(client, alice, acme_key, upstream, monkeypatch):
    # The key is opened only inside the upstream call, as every other caller does: a spy
    # notes what the real call receives and passes it on to the simulator.
    real_call, received = upstream_module.call, []

    async def noting_call(key, *args, **kwargs):
        received.append(key)
        return await real_call(key, *args, **kwargs)

    monkeypatch.setattr(upstream_module, "call", noting_call)
    client.force_login(alice)
    response = client.post(reverse("key_test", args=[acme_key.pk]), **HTMX)
    assert "works: RunTools lists 4 agents" in response.content.decode()
    assert len(received) == 1 and isinstance(received[0], SealedKey)


def test_it_reports_a_key_the_upstream_refuses(client, alice, acme, upstream):
    wrong = RunToolsKey.add(acme, "wrong", "rt_test_not_a_simulator_key")
    client.force_login(alice)
    response = client.post(reverse("key_test", args=[wrong.pk]), follow=True)
    page = response.content.decode()
    assert "was refused by RunTools (HTTP 401" in page
    wrong.refresh_from_db()
    assert wrong.last_test_ok is False


def test_it_reports_an_unreachable_upstream(client, alice, acme_key, settings):
    settings.RUNTOOLS_API_URL = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    client.force_login(alice)
    response = client.post(reverse("key_test", args=[acme_key.pk]), **HTMX)
    assert "could not be tried: Could not connect to RunTools" in response.content.decode()
    acme_key.refresh_from_db()
    assert acme_key.last_test_ok is False


def test_it_reports_a_key_it_cannot_decrypt(client, alice, acme_key, settings):
    settings.RTDASH_ENCRYPTION_KEYS = Fernet.generate_key().decode()
    client.force_login(alice)
    response = client.post(reverse("key_test", args=[acme_key.pk]), **HTMX)
    assert "cannot be decrypted with the configured RTDASH_ENCRYPTION_KEYS" in (
        response.content.decode()
    )


def test_it_sets_the_default_key(client, alice, acme, acme_key):
    other = RunToolsKey.add(acme, "other", SPARE)
    client.force_login(alice)
    response = client.post(reverse("key_default", args=[other.pk]), **HTMX)
    assert "Runs now use other (rt_live_…key9)." in response.content.decode()
    assert acme.default_key() == other
    assert AuditEvent.objects.get(action="key_default_set").target == "other (rt_live_…key9)"


def test_it_revokes_a_key(client, alice, acme, acme_key):
    client.force_login(alice)
    response = client.post(reverse("key_revoke", args=[acme_key.pk]), follow=True)
    assert "The team has no key now" in response.content.decode()
    acme_key.refresh_from_db()
    assert acme_key.revoked_at is not None
    # A revoked key is never used again, so nothing that decrypts to it is kept.
    assert acme_key.ciphertext == ""
    assert acme_key.is_default is False
    assert acme.default_key() is None
    assert AuditEvent.objects.get(action="key_revoked").target == "default (rt_test_…demo)"


def test_revoking_the_default_promotes_the_newest_key(client, alice, acme, acme_key):
    newer = RunToolsKey.add(acme, "newer", SPARE)
    client.force_login(alice)
    response = client.post(reverse("key_revoke", args=[acme_key.pk]), **HTMX)
    assert "Runs now use newer (rt_live_…key9)." in response.content.decode()
    assert acme.default_key() == newer


@pytest.mark.parametrize("action", ["key_test", "key_default", "key_revoke"])
def test_a_revoked_key_is_gone(client, alice, acme_key, action):
    acme_key.revoke()
    client.force_login(alice)
    assert client.post(reverse(action, args=[acme_key.pk])).status_code == 404


@pytest.mark.parametrize("action", ["key_test", "key_default", "key_revoke"])
def test_it_404s_another_teams_key(client, alice, globex_key, action):
    client.force_login(alice)
    assert client.post(reverse(action, args=[globex_key.pk])).status_code == 404
    globex_key.refresh_from_db()
    assert (globex_key.revoked_at, globex_key.is_default, globex_key.last_tested_at) == (
        None,
        True,
        None,
    )


@pytest.mark.parametrize("persona", ["bob", "victor"])
def test_it_requires_manage_role(client, alice, bob, victor, acme, persona):
    client.force_login({"bob": bob, "victor": victor}[persona])
    assert _add(client).status_code == 404
    assert not RunToolsKey.objects.filter(team=acme).exists()


def test_members_see_the_masked_key_without_actions(client, bob, acme_key):
    client.force_login(bob)
    page = client.get(reverse("team_settings")).content.decode()
    assert "rt_test_…demo" in page
    assert reverse("key_test", args=[acme_key.pk]) not in page
