"""Logging in and out, the team switcher, the settings page and team members with roles."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs.core.access import SESSION_TEAM_KEY
from runs.models import AuditEvent, LastOwnerError, Membership, Role
from tests.conftest import PASSWORD

pytestmark = pytest.mark.usefixtures("fast_passwords")

HTMX = {"HTTP_HX_REQUEST": "true"}


def _membership(user, team) -> Membership:
    return Membership.objects.get(user=user, team=team)


# --- Logging in and out -----------------------------------------------------------------


def test_it_shows_the_login_page(client, db):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert 'name="password"' in response.content.decode()


def test_it_logs_in(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("overview")
    assert client.session["_auth_user_id"] == str(alice.pk)
    event = AuditEvent.objects.get(action="login")
    assert (event.actor, event.ip, event.team) == (alice, "127.0.0.1", None)


def test_it_rejects_a_wrong_password(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "hunter2"})
    assert response.status_code == 200
    assert "didn't match" in response.content.decode()
    assert "_auth_user_id" not in client.session
    event = AuditEvent.objects.get(action="login_failed")
    assert (event.actor_label, event.ip) == ("alice", "127.0.0.1")
    assert "hunter2" not in str(event)


def test_it_follows_next_only_within_the_site(client, alice):
    credentials = {"username": "alice", "password": PASSWORD}
    response = client.post(reverse("login") + "?next=/settings/", credentials)
    assert response["Location"] == "/settings/"
    client.post(reverse("logout"))
    response = client.post(reverse("login") + "?next=https://evil.example/", credentials)
    assert response["Location"] == reverse("overview")


def test_it_sends_a_logged_in_user_on(client, alice):
    client.force_login(alice)
    response = client.get(reverse("login"))
    assert response.status_code == 302
    assert response["Location"] == reverse("overview")


def test_it_logs_out(client, alice):
    client.force_login(alice)
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="logout", actor=alice).exists()


def test_it_rejects_logout_by_get(client, alice):
    client.force_login(alice)
    assert client.get(reverse("logout")).status_code == 405
    assert "_auth_user_id" in client.session


# --- Choosing a team --------------------------------------------------------------------


@pytest.fixture
def alice_in_globex(alice, globex):
    return Membership.objects.create(user=alice, team=globex, role=Role.VIEWER)


def test_it_lists_the_users_teams(client, alice, alice_in_globex):
    client.force_login(alice)
    response = client.get(reverse("team_switch"))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Switch to Globex" in page
    assert "Switch to Acme" not in page  # Acme is the current team


def test_it_switches_team(client, alice, alice_in_globex, globex):
    client.force_login(alice)
    response = client.post(reverse("team_switch"), {"team": globex.pk, "next": "/settings/"})
    assert response.status_code == 302
    assert response["Location"] == "/settings/"
    assert client.session[SESSION_TEAM_KEY] == globex.pk
    page = client.get(reverse("team_settings")).content.decode()
    assert "Globex settings" in page
    assert "You are viewer of this team" in page


def test_it_refuses_a_team_the_user_is_not_in(client, alice, globex):
    client.force_login(alice)
    response = client.post(reverse("team_switch"), {"team": globex.pk})
    assert response.status_code == 404
    assert SESSION_TEAM_KEY not in client.session
    assert AuditEvent.objects.filter(action="access_denied", actor=alice).exists()


def test_it_links_the_switcher_only_with_several_teams(client, alice, globex):
    client.force_login(alice)
    assert "Switch team" not in client.get(reverse("team_settings")).content.decode()
    Membership.objects.create(user=alice, team=globex, role=Role.MEMBER)
    assert "Switch team" in client.get(reverse("team_settings")).content.decode()


def test_a_user_without_a_team_gets_404(client, dave):
    client.force_login(dave)
    assert client.get(reverse("team_switch")).status_code == 404
    assert client.get(reverse("team_settings")).status_code == 404


# --- The settings page ------------------------------------------------------------------


def test_it_shows_managers_the_forms(client, alice, bob):
    client.force_login(alice)
    page = client.get(reverse("team_settings")).content.decode()
    for form in ("member_add", "key_add", "token_add"):
        assert f'action="{reverse(form)}"' in page
    assert reverse("team_audit") in page


@pytest.mark.parametrize("persona", ["bob", "victor"])
def test_it_shows_members_and_viewers_a_read_only_page(client, alice, bob, victor, persona):
    client.force_login({"bob": bob, "victor": victor}[persona])
    response = client.get(reverse("team_settings"))
    page = response.content.decode()
    assert response.status_code == 200
    assert "alice" in page and "bob" in page
    assert "only its owners and admins can change these settings" in page
    assert "<form" not in page.split("</header>")[1]
    assert reverse("team_audit") not in page


# --- Members ----------------------------------------------------------------------------


def test_it_adds_a_member(client, alice, dave, acme):
    client.force_login(alice)
    response = client.post(reverse("member_add"), {"username": "dave", "role": "viewer"})
    assert response.status_code == 302
    assert _membership(dave, acme).role == Role.VIEWER
    event = AuditEvent.objects.get(action="member_added")
    assert (event.team, event.actor, event.target) == (acme, alice, "dave as viewer")


def test_it_adds_a_member_with_htmx(client, alice, dave, acme):
    client.force_login(alice)
    response = client.post(reverse("member_add"), {"username": "dave", "role": "member"}, **HTMX)
    page = response.content.decode()
    assert response.status_code == 200
    assert page.startswith('<section id="members"')
    assert "Added dave as member." in page
    assert _membership(dave, acme).role == Role.MEMBER


def test_it_refuses_an_unknown_user(client, alice, acme):
    client.force_login(alice)
    response = client.post(reverse("member_add"), {"username": "nobody", "role": "member"})
    assert response.status_code == 200
    assert "There is no active user with that username." in response.content.decode()
    assert Membership.objects.filter(team=acme).count() == 1


def test_it_refuses_an_existing_member(client, alice, bob, acme):
    client.force_login(alice)
    response = client.post(reverse("member_add"), {"username": "bob", "role": "admin"})
    assert "bob is already a member of this team." in response.content.decode()
    assert _membership(bob, acme).role == Role.MEMBER


def test_it_changes_a_role(client, alice, bob, acme):
    client.force_login(alice)
    url = reverse("member_role", args=[_membership(bob, acme).pk])
    response = client.post(url, {"role": "admin"})
    assert response.status_code == 302
    assert _membership(bob, acme).role == Role.ADMIN
    assert AuditEvent.objects.get(action="member_role_changed").target == "bob: member → admin"


def test_it_keeps_the_last_owner(client, alice, bob, acme):
    client.force_login(alice)
    url = reverse("member_role", args=[_membership(alice, acme).pk])
    response = client.post(url, {"role": "member"}, follow=True)
    assert "A team always keeps at least one owner." in response.content.decode()
    assert _membership(alice, acme).role == Role.OWNER

    url = reverse("member_remove", args=[_membership(alice, acme).pk])
    response = client.post(url, follow=True)
    assert "A team always keeps at least one owner." in response.content.decode()
    assert _membership(alice, acme).role == Role.OWNER
    assert not AuditEvent.objects.filter(action__in=["member_role_changed", "member_removed"])


def test_an_owner_can_step_down_when_another_owner_remains(client, alice, bob, acme):
    _membership(bob, acme).change_role(Role.OWNER)
    client.force_login(alice)
    url = reverse("member_role", args=[_membership(alice, acme).pk])
    response = client.post(url, {"role": "member"}, **HTMX)
    # Their own role changed, so the whole page is reloaded rather than one section.
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("team_settings")
    assert _membership(alice, acme).role == Role.MEMBER


def test_the_last_owner_rule_holds_on_the_model(alice, acme):
    with pytest.raises(LastOwnerError):
        _membership(alice, acme).change_role(Role.ADMIN)
    with pytest.raises(LastOwnerError):
        _membership(alice, acme).remove()


def test_an_admin_cannot_touch_an_owner(client, alice, bob, acme):
    _membership(bob, acme).change_role(Role.ADMIN)
    client.force_login(bob)
    owner = _membership(alice, acme)
    response = client.post(reverse("member_role", args=[owner.pk]), {"role": "viewer"}, **HTMX)
    assert "Only an owner can change an owner&#x27;s role." in response.content.decode()
    response = client.post(reverse("member_remove", args=[owner.pk]), **HTMX)
    assert "Only an owner can remove an owner." in response.content.decode()
    assert _membership(alice, acme).role == Role.OWNER
    assert AuditEvent.objects.filter(action="access_denied", actor=bob).count() == 2


def test_an_admin_cannot_make_an_owner(client, alice, bob, victor, acme):
    _membership(bob, acme).change_role(Role.ADMIN)
    client.force_login(bob)
    url = reverse("member_role", args=[_membership(victor, acme).pk])
    response = client.post(url, {"role": "owner"}, follow=True)
    assert "That role is not one you can give." in response.content.decode()
    assert _membership(victor, acme).role == Role.VIEWER
    # And can give the roles below owner.
    client.post(url, {"role": "member"})
    assert _membership(victor, acme).role == Role.MEMBER


def test_it_removes_a_member(client, alice, bob, acme):
    client.force_login(alice)
    response = client.post(reverse("member_remove", args=[_membership(bob, acme).pk]))
    assert response.status_code == 302
    assert not Membership.objects.filter(user=bob, team=acme).exists()
    assert AuditEvent.objects.get(action="member_removed").target == "bob"
    # bob no longer sees anything of acme's.
    client.force_login(bob)
    assert client.get(reverse("team_settings")).status_code == 404


def test_a_member_who_leaves_goes_to_the_overview(client, alice, bob, acme):
    _membership(bob, acme).change_role(Role.OWNER)
    client.force_login(bob)
    response = client.post(reverse("member_remove", args=[_membership(bob, acme).pk]))
    assert response["Location"] == reverse("overview")
    assert not Membership.objects.filter(user=bob, team=acme).exists()


@pytest.mark.parametrize("persona", ["bob", "victor"])
def test_it_requires_manage_role(client, alice, bob, victor, dave, acme, persona):
    user = {"bob": bob, "victor": victor}[persona]
    client.force_login(user)
    response = client.post(reverse("member_add"), {"username": "dave", "role": "owner"})
    assert response.status_code == 404
    assert not Membership.objects.filter(user=dave).exists()
    denied = AuditEvent.objects.get(action="access_denied")
    assert (denied.actor, denied.team, denied.target) == (user, acme, reverse("member_add"))


def test_it_404s_another_teams_member(client, alice, charlie, globex):
    client.force_login(alice)
    url = reverse("member_role", args=[_membership(charlie, globex).pk])
    assert client.post(url, {"role": "viewer"}).status_code == 404
    assert _membership(charlie, globex).role == Role.OWNER


def test_an_htmx_request_without_a_session_reloads_to_the_login_page(client, db):
    response = client.post(
        reverse("key_add"),
        {},
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL="http://testserver/settings/",
    )
    # Not a 302 that htmx would follow and swap into the keys section.
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("login") + "?next=/settings/"
