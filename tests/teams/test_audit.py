"""The append-only audit log: what is recorded, who can read it, and how it pages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from runs.core.audit import record, team_log
from runs.models import AuditEvent, Membership, Role

pytestmark = pytest.mark.usefixtures("fast_passwords")

HTMX = {"HTTP_HX_REQUEST": "true"}


def test_it_records_every_settings_action(client, alice, bob, dave, acme, acme_key, upstream):
    client.force_login(alice)
    bob_membership = Membership.objects.get(user=bob, team=acme)
    client.post(reverse("member_add"), {"username": "dave", "role": "viewer"})
    client.post(reverse("member_role", args=[bob_membership.pk]), {"role": "admin"})
    client.post(reverse("key_add"), {"label": "spare", "key": "rt_test_spare_key_1234"})
    client.post(reverse("key_test", args=[acme_key.pk]))
    client.post(reverse("key_default", args=[acme_key.pk]))
    client.post(reverse("token_add"), {"name": "ci"})
    token = acme.gateway_tokens.get()
    client.post(reverse("token_revoke", args=[token.pk]))
    client.post(reverse("key_revoke", args=[acme_key.pk]))
    client.post(reverse("member_remove", args=[bob_membership.pk]))

    events = AuditEvent.objects.filter(team=acme).order_by("id")
    assert [e.action for e in events] == [
        "member_added",
        "member_role_changed",
        "key_added",
        "key_tested",
        "key_default_set",
        "token_issued",
        "token_revoked",
        "key_revoked",
        "member_removed",
    ]
    assert {(e.actor, e.actor_label, e.ip) for e in events} == {(alice, "alice", "127.0.0.1")}


def test_it_shows_the_log_to_owners(client, alice, acme):
    record(None, "key_added", acme, target="spare (rt_live_…abcd)", actor_label="alice")
    client.force_login(alice)
    response = client.get(reverse("team_audit"))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Key added" in page
    assert "spare (rt_live_…abcd)" in page


def test_it_shows_the_log_to_admins(client, alice, bob, acme):
    Membership.objects.filter(user=bob).update(role=Role.ADMIN)
    client.force_login(bob)
    assert client.get(reverse("team_audit")).status_code == 200


@pytest.mark.parametrize("persona", ["bob", "victor"])
def test_it_requires_manage_role(client, bob, victor, acme, persona):
    user = {"bob": bob, "victor": victor}[persona]
    client.force_login(user)
    assert client.get(reverse("team_audit")).status_code == 404
    denied = AuditEvent.objects.get(action="access_denied")
    assert (denied.actor, denied.team, denied.target) == (user, acme, reverse("team_audit"))


def test_it_shows_members_logins_and_nobody_elses(client, alice, bob, charlie, acme):
    for username, password in (("bob", "wrong"), ("charlie", "wrong")):
        client.post(reverse("login"), {"username": username, "password": password})
    client.force_login(alice)
    events = list(team_log(acme))
    assert [(e.action, e.actor_label) for e in events] == [
        ("login", "alice"),
        ("login_failed", "bob"),
    ]
    page = client.get(reverse("team_audit")).content.decode()
    assert "Failed login" in page
    assert "charlie" not in page


def test_it_hides_other_teams_events(client, alice, acme, globex):
    record(None, "token_issued", globex, target="globex secret plans", actor_label="charlie")
    client.force_login(alice)
    page = client.get(reverse("team_audit")).content.decode()
    assert "globex secret plans" not in page


def test_it_pages_older_events(client, alice, acme):
    start = timezone.now() - timedelta(days=1)
    for n in range(60):
        AuditEvent.objects.create(
            team=acme, action="key_tested", target=f"event {n:02d}", created_at=start
        )
    client.force_login(alice)  # one more event, a login, newest of all
    page = client.get(reverse("team_audit")).content.decode()
    assert page.count('<tr class="audit-') == 50
    assert "event 59" in page and "event 11" in page and "event 10" not in page
    older = AuditEvent.objects.get(target="event 11").pk
    assert f'href="?before={older}" hx-get="?before={older}"' in page

    rows = client.get(reverse("team_audit"), {"before": older}, **HTMX).content.decode()
    assert rows.lstrip().startswith("<tr")
    assert rows.count('<tr class="audit-') == 11
    assert "event 10" in rows and "event 00" in rows and "event 11" not in rows
    assert "Older events" not in rows


def test_it_404s_a_cursor_from_another_team(client, alice, globex):
    other = record(None, "key_added", globex, actor_label="charlie")
    client.force_login(alice)
    assert client.get(reverse("team_audit"), {"before": other.pk}).status_code == 404
    assert client.get(reverse("team_audit"), {"before": "nonsense"}).status_code == 404


def test_it_is_append_only(acme):
    event = record(None, "key_added", acme, actor_label="alice")
    event.target = "rewritten"
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    with pytest.raises(ValueError, match="append-only"):
        event.delete()
    event.refresh_from_db()
    assert event.target == ""


def test_the_admin_cannot_change_or_delete_events(client, operator, acme):
    event = record(None, "key_added", acme, actor_label="alice")
    client.force_login(operator)
    change = reverse("admin:runs_auditevent_change", args=[event.pk])
    response = client.get(change)
    assert response.status_code == 200
    assert 'name="target"' not in response.content.decode()  # shown read-only
    assert client.post(change, {"target": "rewritten"}).status_code == 403
    delete = reverse("admin:runs_auditevent_delete", args=[event.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()
