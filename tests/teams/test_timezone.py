"""A team's time zone: the settings form, `manage.py team create --timezone` and
`team set-timezone`, the rebuild of the rollups a change makes, and the audit event."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from runs.models import AuditEvent, DailyRunStats, DailyUsage, Team
from tests.helpers import login
from tests.reporting import finished_run, set_price

HOSTILE_NAMES = [
    "",
    "America/Nowhere",
    "../../../../etc/passwd",
    "/usr/share/zoneinfo/UTC",
    "Europe/Berlin\x00",
    " Europe/Berlin",
    "europe/berlin",
    "<script>alert(1)</script>",
    "Factory",
    "localtime",
    "A" * 5000,
]
# 23:30 UTC on March 28th is already the 29th in Berlin.
LATE_EVENING = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)
USAGE = {"inputTokens": 1_000_000, "outputTokens": 0}


def _team(*args) -> str:
    out = io.StringIO()
    call_command("team", *args, stdout=out)
    return out.getvalue()


def _days(team: Team) -> tuple[dict, dict]:
    usage = {row.day: row.runs for row in DailyUsage.objects.filter(team=team)}
    stats = {row.day: row.runs for row in DailyRunStats.objects.filter(team=team, dimensions="*")}
    return usage, stats


def test_a_team_counts_utc_days_by_default(acme):
    assert acme.timezone == "UTC"


def test_the_model_refuses_a_name_that_is_not_a_zone(acme):
    acme.timezone = "America/Nowhere"
    with pytest.raises(ValidationError):
        acme.full_clean()


# --- The settings page ---------------------------------------------------------------------


def test_owners_see_the_zone_form(client, alice):
    login(client, alice)
    page = client.get(reverse("team_settings")).content.decode()
    assert 'id="timezone"' in page
    assert reverse("team_timezone") in page
    assert '<option value="Europe/Berlin">' in page


@pytest.mark.parametrize("persona", ["bob", "victor"])
def test_members_and_viewers_see_the_zone_but_no_form(client, bob, victor, persona):
    client.force_login({"bob": bob, "victor": victor}[persona])
    page = client.get(reverse("team_settings")).content.decode()
    assert "midnight in <strong>UTC</strong>" in page
    assert reverse("team_timezone") not in page


def test_it_changes_the_zone_rebuilds_the_rollups_and_audits(client, acme, alice):
    set_price(acme, since=date(2026, 1, 1))
    finished_run(acme, started_at=LATE_EVENING, usage=USAGE)
    assert _days(acme) == ({date(2026, 3, 28): 1}, {date(2026, 3, 28): 1})
    login(client, alice)
    response = client.post(reverse("team_timezone"), {"timezone": "Europe/Berlin"})
    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.timezone == "Europe/Berlin"
    assert _days(acme) == ({date(2026, 3, 29): 1}, {date(2026, 3, 29): 1})
    event = AuditEvent.objects.get(action="timezone_changed")
    assert (event.team, event.actor, event.target) == (acme, alice, "UTC → Europe/Berlin")
    # The audit page names the action.
    assert "Time zone changed" in client.get(reverse("team_audit")).content.decode()


def test_with_htmx_it_answers_with_the_section(client, acme, alice):
    login(client, alice)
    response = client.post(
        reverse("team_timezone"), {"timezone": "Asia/Tokyo"}, headers={"HX-Request": "true"}
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert page.lstrip().startswith('<section id="timezone"')
    assert "midnight in <strong>Asia/Tokyo</strong>" in page


def test_the_same_zone_again_changes_nothing(client, acme, alice):
    login(client, alice)
    client.post(reverse("team_timezone"), {"timezone": "UTC"})
    assert not AuditEvent.objects.filter(action="timezone_changed").exists()


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_name_is_a_form_error(client, acme, alice, name):
    login(client, alice)
    response = client.post(reverse("team_timezone"), {"timezone": name})
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    acme.refresh_from_db()
    assert acme.timezone == "UTC"
    assert not AuditEvent.objects.filter(action="timezone_changed").exists()


@pytest.mark.parametrize("persona", ["bob", "victor"])
def test_it_requires_manage_role(client, acme, bob, victor, persona):
    client.force_login({"bob": bob, "victor": victor}[persona])
    response = client.post(reverse("team_timezone"), {"timezone": "Europe/Berlin"})
    assert response.status_code == 404
    acme.refresh_from_db()
    assert acme.timezone == "UTC"


def test_an_outsider_changes_only_their_own_team(client, acme, globex, charlie):
    client.force_login(charlie)
    client.post(reverse("team_timezone"), {"timezone": "Europe/Berlin"})
    acme.refresh_from_db()
    globex.refresh_from_db()
    assert (acme.timezone, globex.timezone) == ("UTC", "Europe/Berlin")


def test_it_asks_anonymous_people_to_log_in(client, acme):
    response = client.post(reverse("team_timezone"), {"timezone": "Europe/Berlin"})
    assert response.status_code == 302
    assert reverse("login") in response["Location"]
    acme.refresh_from_db()
    assert acme.timezone == "UTC"


def test_it_rejects_get(client, alice):
    login(client, alice)
    assert client.get(reverse("team_timezone")).status_code == 405


# --- manage.py team ------------------------------------------------------------------------


def test_create_takes_a_timezone(db):
    assert _team("create", "beta", "--timezone", "America/Los_Angeles") == (
        "Created team beta (beta, days in America/Los_Angeles).\n"
    )
    assert Team.objects.get(slug="beta").timezone == "America/Los_Angeles"


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_create_refuses_a_hostile_zone(db, name):
    with pytest.raises(CommandError, match="must be an IANA time zone name"):
        _team("create", "beta", "--timezone", name)
    assert not Team.objects.filter(slug="beta").exists()


def test_set_timezone_rebuilds_and_audits(acme):
    set_price(acme, since=date(2026, 1, 1))
    finished_run(acme, started_at=LATE_EVENING, usage=USAGE)
    out = _team("set-timezone", "acme", "Europe/Berlin")
    assert out == "acme's days now begin at midnight in Europe/Berlin; rollups rebuilt.\n"
    assert _days(acme) == ({date(2026, 3, 29): 1}, {date(2026, 3, 29): 1})
    event = AuditEvent.objects.get(action="timezone_changed")
    assert (event.team, event.actor_label, event.target) == (
        acme,
        "manage.py team",
        "UTC → Europe/Berlin",
    )
    # And back: the rollup returns to the UTC day.
    _team("set-timezone", "acme", "UTC")
    assert _days(acme) == ({date(2026, 3, 28): 1}, {date(2026, 3, 28): 1})


def test_set_timezone_to_the_same_zone_says_so(acme):
    assert _team("set-timezone", "acme", "UTC") == "acme's time zone is already UTC.\n"
    assert not AuditEvent.objects.filter(action="timezone_changed").exists()


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_set_timezone_refuses_a_hostile_zone(acme, name):
    with pytest.raises(CommandError, match="must be an IANA time zone name"):
        _team("set-timezone", "acme", name)
    acme.refresh_from_db()
    assert acme.timezone == "UTC"


def test_set_timezone_refuses_an_unknown_team(db):
    with pytest.raises(CommandError, match="no team 'nope'"):
        _team("set-timezone", "nope", "UTC")
