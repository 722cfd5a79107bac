"""The playground's pages and endpoints: who sees what, the form, the non-stream run, code."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
from django.urls import reverse
from django.utils import timezone

from runs.core.validation import validate_run
from runs.models import DailyUsage, Run, RunEvent, Thread
from runs.pipeline.recording import start_run
from tests.conftest import ACME_KEY

HTMX = {"HTTP_HX_REQUEST": "true"}
HELLO = {"agent": "support-chat", "prompt": "My invoice is wrong"}
UNREACHABLE = "http://127.0.0.1:9/v1"


def _run(team, user, **fields) -> Run:
    body = {"agent": "support-chat", "prompt": "hi", **fields.pop("body", {})}
    request = validate_run(body, json.dumps(body).encode())
    run = start_run(team, request, source="playground", user=user)
    for name, value in fields.items():
        setattr(run, name, value)
    run.save()
    return run


def _page(client, user, query: str = ""):
    client.force_login(user)
    return client.get(reverse("playground") + query)


# --- The page ---------------------------------------------------------------------------


def test_it_sends_anonymous_visitors_to_login(client, db):
    response = client.get(reverse("playground"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_rejects_post_on_the_page(client, bob):
    client.force_login(bob)
    assert client.post(reverse("playground")).status_code == 405


@pytest.mark.usefixtures("upstream", "acme_key")
def test_it_shows_the_form_labelled_for_people_and_tests(client, bob):
    response = _page(client, bob)
    page = response.content.decode()
    assert response.status_code == 200
    for label in ("Agent", "Prompt", "Max tokens", "Max turns", "Temperature", "Stream"):
        assert re.search(rf"<label[^>]*>\s*(<input[^>]*>\s*)?{label}\s*</label>", page), label
    assert ">Run</button>" in page and ">Stop</button>" in page
    assert 'role="log"' in page
    assert "1 to 128,000" in page and "0 to 2" in page and "1 or more" in page
    assert ACME_KEY not in page


@pytest.mark.usefixtures("upstream", "acme_key")
def test_the_navigation_links_the_playground(client, bob):
    page = _page(client, bob).content.decode()
    assert f'<a href="{reverse("playground")}">Playground</a>' in page


@pytest.mark.usefixtures("upstream", "acme_key")
def test_it_lists_the_upstream_agents(client, bob):
    page = _page(client, bob).content.decode()
    for slug in ("code-assistant", "support-chat", "deep-thinker", "slow-poke"):
        assert f'<option value="{slug}">' in page
    assert "from RunTools" in page


@pytest.mark.usefixtures("acme_key")
def test_it_caches_the_agent_list_per_team(client, bob, upstream, settings):
    _page(client, bob)
    settings.RUNTOOLS_API_URL = UNREACHABLE
    page = client.get(reverse("playground")).content.decode()
    assert '<option value="slow-poke">' in page


@pytest.mark.usefixtures("acme_key")
def test_without_the_upstream_it_offers_agents_from_history_and_free_text(
    client, bob, acme, settings
):
    settings.RUNTOOLS_API_URL = UNREACHABLE
    DailyUsage.objects.create(
        team=acme,
        day=timezone.now().date(),
        dimensions="billing-bot|||gateway",
        agent="billing-bot",
    )
    page = _page(client, bob).content.decode()
    assert '<option value="billing-bot">' in page
    assert '<option value="slow-poke">' not in page
    assert "Type any slug" in page


def test_a_viewer_sees_the_page_without_a_run_button(client, victor, settings):
    settings.RUNTOOLS_API_URL = UNREACHABLE
    page = _page(client, victor).content.decode()
    assert 'id="run-button" disabled' in page
    assert "you can watch runs here, not start them" in page


def test_an_outsider_sees_only_his_own_team(client, charlie, acme, bob, settings):
    settings.RUNTOOLS_API_URL = UNREACHABLE
    Thread.objects.create(team=acme, upstream_id="thr_acme", agent="support-chat", title="Acme")
    DailyUsage.objects.create(
        team=acme, day=timezone.now().date(), dimensions="acme-bot|||gateway", agent="acme-bot"
    )
    page = _page(client, charlie).content.decode()
    assert "thr_acme" not in page and "acme-bot" not in page


def test_it_refills_the_form_from_a_run(client, bob, acme):
    run = _run(
        acme,
        bob,
        body={
            "agent": "code-assistant",
            "prompt": "Fix src/app.py",
            "config": {"maxTokens": 500, "maxTurns": 3, "temperature": 0.2},
            "metadata": {"ticket": "T-1", "simulate": {"dripMs": 5}},
            "stream": False,
        },
    )
    page = _page(client, bob, f"?from_run={run.pk}").content.decode()
    assert 'value="code-assistant"' in page
    assert ">Fix src/app.py</textarea>" in page
    assert 'value="500"' in page and 'value="3"' in page and 'value="0.2"' in page
    assert 'value="ticket"' in page and 'value="T-1"' in page
    assert unescape('value="{&quot;dripMs&quot;: 5}"') in unescape(page)
    assert 'id="id_stream" name="stream">' in page  # unchecked: the run was not streamed
    assert "data-watch" not in page


def test_it_refills_message_history_from_a_run(client, bob, acme):
    messages = [{"role": "user", "content": "First"}, {"role": "assistant", "content": "Reply"}]
    run = _run(acme, bob, body={"prompt": None, "messages": messages})
    page = _page(client, bob, f"?from_run={run.pk}").content.decode()
    assert 'value="messages" checked' in page
    assert ">First</textarea>" in page and ">Reply</textarea>" in page


@pytest.mark.parametrize("parameter", ["from_run", "run"])
def test_another_teams_run_is_a_404(client, charlie, acme, bob, globex, parameter):
    run = _run(acme, bob)
    assert _page(client, charlie, f"?{parameter}={run.pk}").status_code == 404
    assert client.get(reverse("playground") + f"?{parameter}=nonsense").status_code == 404


def test_it_watches_a_run_given_in_the_address(client, bob, acme, settings):
    settings.RUNTOOLS_API_URL = UNREACHABLE
    run = _run(acme, bob)
    page = _page(client, bob, f"?run={run.pk}").content.decode()
    assert f'data-watch="{run.pk}"' in page
    assert f"Run #{run.pk}" in page


def test_a_finished_run_in_the_address_shows_its_result_card(client, bob, acme, settings):
    settings.RUNTOOLS_API_URL = UNREACHABLE
    run = _run(acme, bob, status="completed", result="All good.", input_tokens=10)
    page = _page(client, bob, f"?run={run.pk}").content.decode()
    assert 'id="result-card"' in page and "All good." in page


def test_it_continues_a_thread_of_the_team(client, bob, acme, settings):
    settings.RUNTOOLS_API_URL = UNREACHABLE
    Thread.objects.create(team=acme, upstream_id="thr_1", agent="deep-thinker", title="Why?")
    page = _page(client, bob, "?thread=thr_1&agent=deep-thinker").content.decode()
    assert '<option value="thr_1" data-agent="deep-thinker" selected>' in page
    assert 'value="deep-thinker"' in page


def test_it_ignores_a_thread_that_is_not_the_teams(client, charlie, acme, settings):
    settings.RUNTOOLS_API_URL = UNREACHABLE
    Thread.objects.create(team=acme, upstream_id="thr_acme", agent="support-chat", title="Acme")
    page = _page(client, charlie, "?thread=thr_acme&agent=support-chat").content.decode()
    assert "not one of this team&#x27;s threads" in page
    assert "thr_acme" not in page.replace("?thread=thr_acme", "")


# --- Running without streaming (htmx) -----------------------------------------------------


def _post(client, user, data, **headers):
    client.force_login(user)
    return client.post(reverse("playground_run"), data, **headers)


@pytest.mark.usefixtures("upstream", "acme_key")
def test_it_runs_without_streaming_and_answers_with_the_result_card(client, bob):
    response = _post(client, bob, {**HELLO, "max_turns": "2"}, **HTMX)
    page = response.content.decode()
    run = Run.objects.get()
    assert response.status_code == 200
    assert 'id="result-card"' in page and 'data-status="completed"' in page
    assert (run.source, run.user, run.stream, run.config) == (
        "playground",
        bob,
        False,
        {"maxTurns": 2},
    )
    assert run.result and run.result in unescape(page)
    assert f"Run #{run.pk}" in page
    assert f"?thread={run.upstream_thread_id}&amp;agent=support-chat" in page
    assert ACME_KEY not in page


@pytest.mark.usefixtures("upstream", "acme_key")
def test_without_javascript_it_runs_and_shows_the_run(client, bob):
    response = _post(client, bob, HELLO)
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('playground')}?run={run.pk}"


@pytest.mark.usefixtures("upstream", "acme_key")
def test_without_javascript_a_streamed_run_is_read_to_its_end(client, bob):
    response = _post(client, bob, {**HELLO, "stream": "on"})
    run = Run.objects.get()
    assert response.status_code == 302
    assert run.status == "completed" and run.stream is True
    assert RunEvent.objects.filter(run=run).count() == run.frame_count > 3


@pytest.mark.usefixtures("upstream", "acme_key")
def test_an_upstream_error_shows_in_the_card(client, bob):
    data = {**HELLO, "meta_key": "simulate", "meta_value": '{"status": 429}'}
    page = _post(client, bob, data, **HTMX).content.decode()
    assert 'data-status="failed"' in page
    assert "RunTools answered 429 (rate_limited):" in page
    assert Run.objects.get().status == "failed"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {**HELLO, "temperature": "3"},
            "Temperature: Ensure this value is less than or equal to 2",
        ),
        ({**HELLO, "max_tokens": "128001"}, "Max tokens: Ensure this value is less than or equal"),
        ({**HELLO, "max_turns": "0"}, "Max turns: Ensure this value is greater than or equal to 1"),
        ({**HELLO, "prompt": ""}, "Prompt: Write a prompt."),
        ({"prompt": "hi"}, "Agent: This field is required."),
        # Checked by validate_run, as the gateway checks it.
        ({**HELLO, "meta_key": "big", "meta_value": "x" * 17_000}, "Metadata: metadata is 17"),
    ],
)
@pytest.mark.usefixtures("upstream", "acme_key")
def test_it_checks_the_form_on_the_server(client, bob, data, message):
    response = _post(client, bob, data, **HTMX)
    assert response.status_code == 200
    assert message in unescape(response.content.decode())
    assert not Run.objects.exists()
    response = client.post(reverse("playground_run"), data)
    assert response.status_code == 400
    assert not Run.objects.exists()


@pytest.mark.usefixtures("upstream")
def test_it_says_when_there_is_no_key(client, bob):
    page = _post(client, bob, HELLO, **HTMX).content.decode()
    assert "The team has no RunTools key" in page
    assert not Run.objects.exists()


def test_viewers_cannot_run(client, victor, acme_key):
    assert _post(client, victor, HELLO).status_code == 404
    assert not Run.objects.exists()


def test_anonymous_cannot_run(client, db):
    response = client.post(reverse("playground_run"), HELLO)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_the_run_endpoint_rejects_get(client, bob):
    client.force_login(bob)
    assert client.get(reverse("playground_run")).status_code == 405


@pytest.mark.usefixtures("upstream", "globex_key", "acme_key")
def test_an_outsider_runs_in_his_own_team(client, charlie, globex):
    _post(client, charlie, HELLO, **HTMX)
    assert Run.objects.get().team == globex


# --- The result card and Stop -------------------------------------------------------------


def test_the_card_shows_a_run_of_the_team(client, bob, acme):
    run = _run(acme, bob, status="failed", http_status=502, error_code="provider_error")
    client.force_login(bob)
    page = client.get(reverse("playground_card", args=[run.pk])).content.decode()
    assert "RunTools answered 502 (provider_error)" in page


def test_the_card_is_a_404_for_outsiders_and_login_for_anonymous(client, charlie, acme, bob):
    run = _run(acme, bob)
    url = reverse("playground_card", args=[run.pk])
    assert client.get(url).status_code == 302
    client.force_login(charlie)
    assert client.get(url).status_code == 404
    client.force_login(bob)
    assert client.post(url).status_code == 405


def test_stop_sets_the_flag_that_every_worker_reads(client, bob, acme):
    run = _run(acme, bob)
    client.force_login(bob)
    response = client.post(reverse("playground_stop", args=[run.pk]), **HTMX)
    assert "Stopping the run." in response.content.decode()
    run.refresh_from_db()
    assert run.cancel_requested


def test_stop_of_a_finished_run_says_so(client, bob, acme):
    run = _run(acme, bob, status="completed")
    client.force_login(bob)
    response = client.post(reverse("playground_stop", args=[run.pk]), **HTMX)
    assert "already ended" in response.content.decode()
    run.refresh_from_db()
    assert not run.cancel_requested


@pytest.mark.parametrize("persona", ["victor", "charlie"])
def test_stop_is_a_404_for_viewers_and_outsiders(client, acme, bob, victor, charlie, persona):
    run = _run(acme, bob)
    client.force_login({"victor": victor, "charlie": charlie}[persona])
    assert client.post(reverse("playground_stop", args=[run.pk])).status_code == 404
    run.refresh_from_db()
    assert not run.cancel_requested


def test_stop_needs_login_and_post(client, acme, bob):
    run = _run(acme, bob)
    url = reverse("playground_stop", args=[run.pk])
    assert client.post(url).status_code == 302
    client.force_login(bob)
    assert client.get(url).status_code == 405


# --- View code ----------------------------------------------------------------------------


def test_view_code_shows_curl_python_and_javascript_with_the_token_variable(client, bob, acme_key):
    client.force_login(bob)
    data = {**HELLO, "stream": "on", "max_tokens": "100", "meta_key": "a", "meta_value": "1"}
    page = unescape(client.post(reverse("playground_code"), data).content.decode())
    assert "curl -N http://testserver/v1/run" in page
    assert '-H "X-API-Key: $RTDASH_TOKEN"' in page
    assert 'os.environ["RTDASH_TOKEN"]' in page
    assert '"X-API-Key": process.env.RTDASH_TOKEN' in page
    assert ACME_KEY not in page


def test_view_code_explains_what_to_fix(client, bob):
    client.force_login(bob)
    page = client.post(reverse("playground_code"), {"agent": ""}).content.decode()
    assert "Fix the form to see the code" in page and "This field is required." in page


def test_view_code_needs_login_and_post(client, bob):
    assert client.post(reverse("playground_code"), HELLO).status_code == 302
    client.force_login(bob)
    assert client.get(reverse("playground_code")).status_code == 405
