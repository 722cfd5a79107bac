"""The runs list's `who` filter takes a value from the URL: hostile values never reach int().

A value that is not one of the team's people or tokens is a form error on the page and is not
applied (the list and the exports show every run); a RunFilters built with such a value by
code finds nothing rather than raising.
"""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse

from runs.core.access import for_team
from runs.history.filters import RunFilters
from runs.models import Run
from tests.helpers import make_run, shown_run_ids

pytestmark = pytest.mark.usefixtures("fast_passwords")

HOSTILE_WHO = [
    "user:²",
    "token:²",
    "user:" + "9" * 5000,
    "user:-1",
    "user:1e3",
    "user: 1",
    "user:",
    "²",
    "nobody:1",
    "team:1",
    "user:1:2",
]


@pytest.fixture
def two_runs(acme, alice, bob):
    return [make_run(acme, user=alice), make_run(acme, user=bob)]


@pytest.mark.parametrize("who", HOSTILE_WHO)
def test_the_list_shows_a_form_error_for_a_hostile_who(client, alice, two_runs, who):
    client.force_login(alice)
    response = client.get(reverse("run_list"), {"who": who})
    assert response.status_code == 200
    assert "Select a valid choice." in response.content.decode()
    assert sorted(shown_run_ids(response)) == sorted(run.pk for run in two_runs)


async def _read(response) -> str:
    return b"".join([chunk async for chunk in response.streaming_content]).decode()


@pytest.mark.parametrize("who", HOSTILE_WHO)
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_the_exports_ignore_a_hostile_who(client, alice, two_runs, who, fmt):
    client.force_login(alice)
    response = client.get(reverse("run_export", args=[fmt]), {"who": who})
    assert response.status_code == 200
    body = async_to_sync(_read)(response)
    assert len(body.strip().splitlines()) == len(two_runs) + (fmt == "csv")


@pytest.mark.parametrize("who", HOSTILE_WHO)
def test_filters_built_in_code_with_a_hostile_who_find_nothing(acme, two_runs, who):
    runs = RunFilters(who=who).apply(for_team(Run, acme))
    assert list(runs) == []


def test_a_valid_who_still_filters(acme, alice, two_runs):
    runs = RunFilters(who=f"user:{alice.pk}").apply(for_team(Run, acme))
    assert list(runs) == [two_runs[0]]
