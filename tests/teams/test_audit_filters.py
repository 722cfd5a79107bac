"""The audit log filtered by action, actor and days, with bad values as form errors."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from runs.core.audit import record
from runs.models import AuditEvent

pytestmark = pytest.mark.usefixtures("fast_passwords")

HTMX = {"HTTP_HX_REQUEST": "true"}


def event(team, action: str, actor: str, when: datetime, target: str = "") -> AuditEvent:
    record(None, action, team, target=target, actor_label=actor)
    made = AuditEvent.objects.filter(team=team).latest("id")
    AuditEvent.objects.filter(pk=made.pk).update(created_at=when)
    return made


def shown(html: str) -> list[str]:
    return re.findall(r'<tr class="audit-([a-z_]+)">', html)


@pytest.fixture
def log(acme):
    return [
        event(acme, "key_added", "alice", datetime(2026, 3, 1, 9, tzinfo=UTC), "first"),
        event(acme, "token_issued", "bob", datetime(2026, 3, 2, 23, 59, tzinfo=UTC), "ci"),
        event(acme, "key_added", "bob", datetime(2026, 3, 3, 0, 0, tzinfo=UTC), "second"),
        event(acme, "budget_set", "alice", datetime(2026, 3, 5, 12, tzinfo=UTC), "team"),
    ]


def test_it_filters_by_action(client, alice, log):
    client.force_login(alice)
    html = client.get(reverse("team_audit"), {"action": "key_added"}).content.decode()
    assert shown(html) == ["key_added", "key_added"]
    assert "second" in html and "first" in html and "ci</td>" not in html


def test_it_filters_by_actor_ignoring_case(client, alice, log):
    client.force_login(alice)
    html = client.get(reverse("team_audit"), {"actor": " BOB "}).content.decode()
    assert shown(html) == ["key_added", "token_issued"]


def test_it_filters_by_utc_days_inclusive(client, alice, log):
    client.force_login(alice)
    html = client.get(
        reverse("team_audit"), {"since": "2026-03-02", "until": "2026-03-03"}
    ).content.decode()
    assert shown(html) == ["key_added", "token_issued"]


def test_filters_combine(client, alice, log):
    client.force_login(alice)
    html = client.get(
        reverse("team_audit"), {"action": "key_added", "actor": "alice", "until": "2026-03-04"}
    ).content.decode()
    assert shown(html) == ["key_added"] and "first" in html


@pytest.mark.parametrize(
    "query",
    [
        {"action": "drop_table"},
        {"since": "yesterday"},
        {"until": "2026-02-30"},
        {"since": "2026-03-05", "until": "2026-03-01"},
        {"actor": "x" * 500},
        {"since": "99999-01-01"},
        {"action": "\x00"},
    ],
)
def test_hostile_values_are_form_errors_not_500(client, alice, log, query):
    client.force_login(alice)
    response = client.get(reverse("team_audit"), query)
    assert response.status_code == 400
    assert "This filter was not applied." in response.content.decode()


def test_older_events_keep_the_filters(client, alice, acme):
    for index in range(60):
        event(acme, "key_added", "alice", datetime(2026, 3, 1, 9, index, tzinfo=UTC), str(index))
        event(acme, "token_issued", "bob", datetime(2026, 3, 1, 10, index, tzinfo=UTC), "t")
    client.force_login(alice)
    first = client.get(reverse("team_audit"), {"action": "key_added"}).content.decode()
    assert set(shown(first)) == {"key_added"} and len(shown(first)) == 50
    link = re.search(r'<a href="\?([^"]+)" hx-get', first).group(1).replace("&amp;", "&")
    assert "action=key_added" in link
    rest = client.get(reverse("team_audit") + "?" + link, **HTMX).content.decode()
    assert shown(rest) == ["key_added"] * 10


def test_an_outsider_cannot_filter_acme_log(client, charlie, log):
    client.force_login(charlie)
    html = client.get(reverse("team_audit"), {"actor": "alice"}).content.decode()
    assert shown(html) == [] and "No events match these filters." in html
