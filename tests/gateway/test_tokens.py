"""Gateway tokens: created and shown once, listed by prefix and last use, revoked."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from runs.models import AuditEvent, GatewayToken, hash_token

pytestmark = pytest.mark.usefixtures("fast_passwords")

HTMX = {"HTTP_HX_REQUEST": "true"}


def _plaintext_in(page: str) -> str:
    """The token shown in the one-time box."""
    start = page.index('id="new-token"')
    value = page.index('value="', start) + len('value="')
    return page[value : page.index('"', value)]


def test_it_creates_a_token_and_shows_it_once(client, alice, acme):
    client.force_login(alice)
    response = client.post(reverse("token_add"), {"name": "nightly CI"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "Copy it now: it is shown only this once." in page
    assert "no-store" in response["Cache-Control"]

    plaintext = _plaintext_in(page)
    token = GatewayToken.objects.get(team=acme, name="nightly CI")
    assert plaintext.startswith("rtd_")
    assert token.token_hash == hash_token(plaintext)
    assert token.prefix == plaintext[:12]
    assert token.created_by == alice
    assert (token.expires_at, token.requests_per_minute) == (None, None)
    event = AuditEvent.objects.get(action="token_issued")
    assert event.target == f"nightly CI ({token.prefix}…)"
    assert plaintext not in event.target

    # Never again: the list shows only the prefix.
    again = client.get(reverse("team_settings")).content.decode()
    assert plaintext not in again
    assert f"{token.prefix}…" in again


def test_it_creates_a_token_with_htmx_and_a_copy_button(client, alice, acme):
    client.force_login(alice)
    response = client.post(reverse("token_add"), {"name": "script"}, **HTMX)
    page = response.content.decode()
    assert page.startswith('<section id="tokens"')
    assert 'data-copy="#new-token"' in page
    assert GatewayToken.objects.get(team=acme).token_hash == hash_token(_plaintext_in(page))


def test_it_sets_expiry_and_a_rate_limit(client, alice, acme):
    client.force_login(alice)
    data = {"name": "limited", "expires_in": "30", "requests_per_minute": "60"}
    client.post(reverse("token_add"), data)
    token = GatewayToken.objects.get(team=acme, name="limited")
    expected = timezone.now() + timedelta(days=30)
    assert abs(token.expires_at - expected) < timedelta(minutes=1)
    assert token.requests_per_minute == 60


@pytest.mark.parametrize(
    "data",
    [
        {"name": ""},
        {"name": "x" * 101},
        {"name": "ok", "expires_in": "5"},
        {"name": "ok", "requests_per_minute": "0"},
    ],
)
def test_it_rejects_a_bad_token_form(client, alice, acme, data):
    client.force_login(alice)
    response = client.post(reverse("token_add"), data, **HTMX)
    page = response.content.decode()
    assert "errorlist" in page
    assert 'id="new-token"' not in page
    assert not GatewayToken.objects.filter(team=acme).exists()


def test_it_lists_tokens_with_prefix_and_last_use(client, bob, acme_token):
    token, plaintext = acme_token
    token.last_used_at = timezone.now() - timedelta(hours=3)
    token.save()
    client.force_login(bob)
    page = client.get(reverse("team_settings")).content.decode()
    assert f"<code>{token.prefix}…</code>" in page
    assert "3\xa0hours ago" in page
    assert plaintext not in page


def test_it_revokes_a_token(client, alice, acme_token):
    token, _ = acme_token
    client.force_login(alice)
    response = client.post(reverse("token_revoke", args=[token.pk]), **HTMX)
    page = response.content.decode()
    assert "Revoked token ci; it no longer works." in page
    assert '<span class="badge failed">revoked</span>' in page
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert not token.is_usable()
    assert AuditEvent.objects.get(action="token_revoked").target == f"ci ({token.prefix}…)"
    # Revoked is final.
    assert client.post(reverse("token_revoke", args=[token.pk])).status_code == 404


def test_it_marks_an_expired_token(client, alice, acme_token):
    token, _ = acme_token
    token.expires_at = timezone.now() - timedelta(minutes=1)
    token.save()
    assert token.status == "expired"
    client.force_login(alice)
    assert (
        '<span class="badge failed">expired</span>'
        in client.get(reverse("team_settings")).content.decode()
    )


def test_it_404s_another_teams_token(client, alice, globex_token):
    token, _ = globex_token
    client.force_login(alice)
    assert client.post(reverse("token_revoke", args=[token.pk])).status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


@pytest.mark.parametrize("persona", ["bob", "victor"])
def test_it_requires_manage_role(client, bob, victor, acme, acme_token, persona):
    client.force_login({"bob": bob, "victor": victor}[persona])
    assert client.post(reverse("token_add"), {"name": "mine"}).status_code == 404
    token, _ = acme_token
    assert client.post(reverse("token_revoke", args=[token.pk])).status_code == 404
    assert list(GatewayToken.objects.filter(team=acme)) == [token]
    token.refresh_from_db()
    assert token.revoked_at is None


def test_the_admin_shows_neither_hash_nor_a_way_to_unrevoke(client, operator, acme_token):
    token, plaintext = acme_token
    token.revoke()
    client.force_login(operator)
    page = client.get(reverse("admin:runs_gatewaytoken_change", args=[token.pk])).content.decode()
    assert token.prefix in page
    assert token.token_hash not in page
    assert plaintext not in page
    assert 'name="revoked_at' not in page
    assert client.get(reverse("admin:runs_gatewaytoken_add")).status_code == 403
