"""Compare side by side without JavaScript: the page, its shareable address, and "Run all"
posting the form (every column run at once, not streamed, each a recorded playground run)."""

from __future__ import annotations

from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from runs.models import Run
from tests.conftest import ACME_KEY

URL = "/playground/compare"


def _columns(*agents: str, **config: list[str]) -> dict:
    data = {"prompt": "Compare me", "agent": list(agents)}
    for name in ("max_tokens", "max_turns", "temperature"):
        data[name] = config.get(name, [""] * len(agents))
    return data


def test_it_is_at_its_address():
    assert reverse("playground_compare") == URL


def test_it_sends_anonymous_visitors_to_login(client, db):
    response = client.get(URL)
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_it_rejects_other_methods(client, bob):
    client.force_login(bob)
    assert client.put(URL).status_code == 405


def test_it_shows_two_columns_by_default(client, bob):
    client.force_login(bob)
    page = client.get(URL).content.decode()
    assert page.count("data-column") == 2
    assert page.count('role="log"') == 2
    assert '<label for="compare-prompt">Prompt</label>' in page
    assert ">Run all</button>" in page and ">Add column</button>" in page


def test_the_address_holds_the_comparison(client, bob):
    client.force_login(bob)
    query = "prompt=Hi&agent=support-chat&max_tokens=50&agent=deep-thinker&temperature=&agent=x"
    page = unescape(client.get(f"{URL}?{query}").content.decode())
    assert page.count("data-column") == 3
    assert ">Hi</textarea>" in page
    assert 'value="support-chat"' in page and 'value="deep-thinker"' in page
    assert 'name="max_tokens" min="1" max="128000" step="1" value="50"' in page


def test_it_keeps_at_most_four_columns(client, bob):
    client.force_login(bob)
    page = client.get(URL + "?" + "&".join(f"agent=a{i}" for i in range(9))).content.decode()
    assert page.count("data-column") == 4
    assert 'id="add-column" disabled' in page


@pytest.mark.usefixtures("upstream", "acme_key")
def test_run_all_runs_every_column_and_shows_each_result(client, bob):
    client.force_login(bob)
    data = _columns("support-chat", "deep-thinker", "code-assistant", max_turns=["", "", "1"])
    response = client.post(URL, {**data, "action": "run"})
    page = unescape(response.content.decode())
    assert response.status_code == 200
    runs = list(Run.objects.order_by("agent"))
    assert [run.agent for run in runs] == ["code-assistant", "deep-thinker", "support-chat"]
    for run in runs:
        assert (run.source, run.user, run.status, run.prompt) == (
            "playground",
            bob,
            "completed",
            "Compare me",
        )
        assert f"Run #{run.pk}" in page
    assert runs[0].config == {"maxTurns": 1}
    assert "single turn" in page  # code-assistant's answer with one turn
    assert ACME_KEY not in page
    # The link to share holds the same comparison.
    share = urlsplit(page.split('id="share-link"')[0].rsplit('href="', 1)[1].split('"')[0])
    assert parse_qs(share.query, keep_blank_values=True)["agent"] == data["agent"]


@pytest.mark.usefixtures("upstream", "acme_key")
def test_a_column_with_a_problem_runs_nothing(client, bob):
    client.force_login(bob)
    data = _columns("support-chat", "deep-thinker", temperature=["", "5"])
    response = client.post(URL, {**data, "action": "run"})
    page = response.content.decode()
    assert response.status_code == 400
    assert 'name="temperature" min="0" max="2" step="any" value="5" aria-invalid="true"' in page
    assert Run.objects.count() == 0


@pytest.mark.usefixtures("upstream", "acme_key")
def test_an_empty_prompt_is_a_form_error(client, bob):
    client.force_login(bob)
    response = client.post(URL, {**_columns("a", "b"), "prompt": " ", "action": "run"})
    assert response.status_code == 400
    assert "Write a prompt." in response.content.decode()
    assert Run.objects.count() == 0


def test_add_and_remove_columns_without_javascript(client, bob):
    client.force_login(bob)
    page = client.post(URL, {**_columns("a", "b"), "action": "add"}).content.decode()
    assert page.count("data-column") == 3 and Run.objects.count() == 0
    data = _columns("a", "b", "c")
    page = client.post(URL, {**data, "action": "remove-2"}).content.decode()
    assert page.count("data-column") == 2
    assert 'value="a"' in page and 'value="c"' in page and 'value="b"' not in page


def test_a_viewer_cannot_run_all(client, victor, acme_key):
    client.force_login(victor)
    assert 'id="run-all" disabled' in client.get(URL).content.decode()
    response = client.post(URL, {**_columns("support-chat", "deep-thinker"), "action": "run"})
    assert response.status_code == 403
    assert Run.objects.count() == 0


@pytest.mark.usefixtures("acme_key")
def test_an_outsider_runs_in_his_own_team(client, charlie, globex):
    client.force_login(charlie)
    response = client.post(URL, {**_columns("support-chat", "deep-thinker"), "action": "run"})
    assert response.status_code == 200
    assert "The team has no RunTools key" in response.content.decode()
    assert not Run.objects.filter(team__name="Acme").exists()
