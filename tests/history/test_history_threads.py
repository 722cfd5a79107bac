"""Threads: rtdash's records merged with the simulator's, turn by turn, rename, archive, delete.

Threads made "outside rtdash" are made straight against the simulator with the team's key,
as a script that bypasses rtdash would; recorded ones go through rtdash's gateway.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.urls import reverse

from runs.history.threads import Turn, climbing_input, number_turns
from runs.models import AuditEvent, DailyUsage, Run, RunEvent, Thread
from tests.conftest import ACME_KEY
from tests.helpers import NOW, gateway_run, make_run

pytestmark = [pytest.mark.usefixtures("fast_passwords"), pytest.mark.django_db(transaction=True)]


@pytest.fixture
def token(upstream, acme_key, acme_token) -> str:
    return acme_token[1]


def direct(upstream, method: str, path: str, body: dict | None = None) -> httpx.Response:
    """Talk to the simulator with acme's key, bypassing rtdash."""
    return httpx.request(
        method, f"{upstream.url}{path}", json=body, headers={"X-API-Key": ACME_KEY}, timeout=30
    )


def outside_run(upstream, body: dict) -> dict:
    response = direct(upstream, "POST", "/run", {"stream": False, **body})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def shown_threads(response) -> list[str]:
    return re.findall(r'data-thread="([^"]+)"', response.content.decode())


def row_of(response, thread_id: str) -> str:
    html = response.content.decode()
    start = html.index(f'data-thread="{thread_id}"')
    return html[start : html.index("</tr>", start)]


# --- The list -----------------------------------------------------------------------------


def test_the_list_merges_recorded_and_outside_threads(client, alice, upstream, token):
    recorded = gateway_run(token, {"agent": "support-chat", "prompt": "Recorded question"})
    outside = outside_run(upstream, {"agent": "support-chat", "prompt": "Asked elsewhere"})
    client.force_login(alice)
    response = client.get(reverse("thread_list"))
    shown = shown_threads(response)
    assert shown.index(outside["threadId"]) < shown.index(recorded.upstream_thread_id)
    row = row_of(response, recorded.upstream_thread_id)
    assert "Recorded question" in row and "outside rtdash" not in row
    assert f"{recorded.input_tokens:,} / {recorded.output_tokens:,}" in row
    assert "unpriced" in row
    row = row_of(response, outside["threadId"])
    assert "Asked elsewhere" in row and "outside rtdash" in row


def test_only_agents_the_team_used_are_asked_about(client, alice, upstream, token):
    gateway_run(token, {"agent": "support-chat", "prompt": "hi"})
    thinker = outside_run(upstream, {"agent": "deep-thinker", "prompt": "Not ours to list"})
    client.force_login(alice)
    assert thinker["threadId"] not in shown_threads(client.get(reverse("thread_list")))


def test_it_searches_titles_here_and_upstream(client, alice, upstream, token):
    wanted = gateway_run(token, {"agent": "support-chat", "prompt": "Invoice for Mangrove Ltd"})
    gateway_run(token, {"agent": "support-chat", "prompt": "Something else"})
    outside = outside_run(upstream, {"agent": "support-chat", "prompt": "mangrove again"})
    client.force_login(alice)
    shown = shown_threads(client.get(reverse("thread_list") + "?q=MANGROVE"))
    assert shown == [outside["threadId"], wanted.upstream_thread_id]


def test_an_unreachable_upstream_is_a_notice_and_local_threads_still_show(
    client, alice, upstream, token, settings
):
    recorded = gateway_run(token, {"agent": "support-chat", "prompt": "Still here"})
    settings.RUNTOOLS_API_URL = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    client.force_login(alice)
    response = client.get(reverse("thread_list"))
    html = response.content.decode()
    assert "RunTools could not be reached" in html
    assert shown_threads(response) == [recorded.upstream_thread_id]
    html = client.get(reverse("thread_detail", args=[recorded.upstream_thread_id])).content
    assert b"RunTools could not be reached" in html and b"Still here" in html


def test_without_a_key_it_says_so_and_lists_local_threads(client, alice, acme, db):
    make_run(acme, upstream_thread_id="thr_local")
    Thread.objects.create(team=acme, upstream_id="thr_local", agent="support-chat", title="Local")
    DailyUsage.objects.create(team=acme, day=NOW.date(), dimensions="x", agent="support-chat")
    client.force_login(alice)
    response = client.get(reverse("thread_list"))
    assert "The team has no RunTools key" in response.content.decode()
    assert shown_threads(response) == ["thr_local"]


def test_archived_threads_are_listed_apart(client, alice, acme):
    Thread.objects.create(team=acme, upstream_id="thr_on", agent="a", title="On")
    Thread.objects.create(team=acme, upstream_id="thr_off", agent="a", title="Off", archived=True)
    client.force_login(alice)
    assert shown_threads(client.get(reverse("thread_list"))) == ["thr_on"]
    assert shown_threads(client.get(reverse("thread_list") + "?show=archived")) == ["thr_off"]
    assert set(shown_threads(client.get(reverse("thread_list") + "?show=all"))) == {
        "thr_on",
        "thr_off",
    }


def test_thread_pages_continue_by_keyset(client, alice, acme):
    for index in range(65):
        Thread.objects.create(
            team=acme,
            upstream_id=f"thr_{index:03d}",
            agent="a",
            title=f"Thread {index}",
            last_activity_at=NOW - timedelta(minutes=index // 2),  # ties on purpose
        )
    client.force_login(alice)
    seen, url = [], reverse("thread_list")
    while url:
        response = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="more-threads")
        seen += shown_threads(response)
        match = re.search(
            r'id="more-threads"><td[^>]*>\s*<a href="([^"]+)"', response.content.decode()
        )
        url = reverse("thread_list") + match.group(1).replace("&amp;", "&") if match else ""
    expected = sorted(Thread.objects.all(), key=lambda t: (t.last_activity_at, t.upstream_id))
    assert seen == [t.upstream_id for t in reversed(expected)]


# --- One thread ---------------------------------------------------------------------------


def test_a_thread_reads_turn_by_turn_with_running_totals(client, alice, token):
    first = gateway_run(token, {"agent": "code-assistant", "prompt": "Check app/models.py"})
    thread_id = first.upstream_thread_id
    second = gateway_run(
        token, {"agent": "code-assistant", "prompt": "Go on", "threadId": thread_id}
    )
    third = gateway_run(
        token, {"agent": "code-assistant", "prompt": "Thanks", "threadId": thread_id}
    )
    Run.objects.filter(pk=first.pk).update(cost=Decimal("0.001"), cost_status="computed")
    Run.objects.filter(pk=third.pk).update(cost=Decimal("0.002"), cost_status="computed")
    client.force_login(alice)
    html = client.get(reverse("thread_detail", args=[thread_id])).content.decode()
    turns = html.split('<li class="turn')[1:]
    assert len(turns) == 3
    assert "Check app/models.py" in turns[0] and "read_file" in turns[0]
    assert "Go on" in turns[1] and "Thanks" in turns[2]
    total = sum(r.input_tokens + r.output_tokens for r in (first, second, third))
    assert f"{first.input_tokens:,} in / {first.output_tokens:,} out, $0.001." in turns[0]
    assert (
        f"Running total: {first.input_tokens + first.output_tokens:,} tokens, $0.001." in turns[0]
    )
    assert "unpriced" in turns[1] and "$0.001 + unpriced" in turns[1]
    assert f"Running total: {total:,} tokens, $0.003 + unpriced." in turns[2]
    assert "not recorded by rtdash" not in html


def test_turns_made_outside_rtdash_are_fetched_and_marked(client, alice, upstream, token):
    recorded = gateway_run(token, {"agent": "support-chat", "prompt": "Through rtdash"})
    thread_id = recorded.upstream_thread_id
    outside_run(
        upstream, {"agent": "support-chat", "prompt": "Straight to RunTools", "threadId": thread_id}
    )
    client.force_login(alice)
    html = client.get(reverse("thread_detail", args=[thread_id])).content.decode()
    turns = html.split('<li class="turn')[1:]
    assert len(turns) == 2
    assert "Through rtdash" in turns[0] and "not recorded by rtdash" not in turns[0]
    assert "Straight to RunTools" in turns[1] and "not recorded by rtdash" in turns[1]
    assert "Reply 2 in this thread" in turns[1]  # the simulator's answer, read from upstream
    assert "1 made outside rtdash" in html


def test_a_thread_known_only_upstream_has_a_page(client, alice, upstream, token):
    gateway_run(token, {"agent": "support-chat", "prompt": "hi"})
    outside = outside_run(upstream, {"agent": "support-chat", "prompt": "Only upstream"})
    client.force_login(alice)
    response = client.get(reverse("thread_detail", args=[outside["threadId"]]))
    assert response.status_code == 200
    assert response.content.decode().count("not recorded by rtdash") == 1


def test_an_unknown_thread_is_404(client, alice, token):
    client.force_login(alice)
    assert client.get(reverse("thread_detail", args=["thr_nobody"])).status_code == 404


def test_input_that_keeps_climbing_is_flagged(client, alice, token):
    first = gateway_run(token, {"agent": "support-chat", "prompt": "Tell me more"})
    thread_id = first.upstream_thread_id
    short = gateway_run(token, {"agent": "support-chat", "prompt": "Short one"})
    gateway_run(
        token, {"agent": "support-chat", "prompt": "Again", "threadId": short.upstream_thread_id}
    )
    for _ in range(3):
        gateway_run(
            token, {"agent": "support-chat", "prompt": "Tell me more", "threadId": thread_id}
        )
    inputs = list(
        Run.objects.filter(upstream_thread_id=thread_id)
        .order_by("pk")
        .values_list("input_tokens", flat=True)
    )
    assert inputs == sorted(set(inputs))  # the simulator bills the history on every turn
    client.force_login(alice)
    html = client.get(reverse("thread_detail", args=[thread_id])).content.decode()
    assert "getting expensive to continue" in html
    assert f"from {inputs[0]:,} to {inputs[-1]:,}" in html
    html = client.get(reverse("thread_detail", args=[short.upstream_thread_id])).content.decode()
    assert "getting expensive to continue" not in html


def test_climbing_needs_growth_on_each_of_the_last_turns(db):
    def turns(*inputs):
        result = [Turn(at=None, run=Run(input_tokens=value)) for value in inputs]
        number_turns(result)
        return result

    assert climbing_input(turns(100, 200, 300, 400)).turns == 4
    assert climbing_input(turns(100, 200, 300)) is None  # two rises, not three
    assert climbing_input(turns(500, 100, 200, 300, 400)).first == 100
    assert climbing_input(turns(100, 200, 300, 300)) is None  # growth stopped
    assert climbing_input(turns(100, 200, None, 300, 400)).turns == 4  # unknowns skipped


def test_continue_in_playground_links_thread_and_agent(client, alice, token, bob):
    run = gateway_run(token, {"agent": "deep-thinker", "prompt": "Why?"})
    client.force_login(bob)
    html = client.get(reverse("thread_detail", args=[run.upstream_thread_id])).content.decode()
    assert f"playground?thread={run.upstream_thread_id}&amp;agent=deep-thinker" in html.replace(
        "/?", "?"
    )


# --- Rename, archive, delete --------------------------------------------------------------


def test_rename_changes_the_title_upstream_and_here(client, bob, upstream, token):
    run = gateway_run(token, {"agent": "support-chat", "prompt": "Old title"})
    thread_id = run.upstream_thread_id
    client.force_login(bob)
    response = client.post(reverse("thread_rename", args=[thread_id]), {"title": "  New   name "})
    assert response.status_code == 302
    assert direct(upstream, "GET", f"/threads/{thread_id}").json()["data"]["thread"]["title"] == (
        "New name"
    )
    assert Thread.objects.get(upstream_id=thread_id).title == "New name"
    assert AuditEvent.objects.filter(action="thread_renamed", actor=bob).exists()
    assert b"New name" in client.get(reverse("thread_detail", args=[thread_id])).content


def test_a_blank_title_changes_nothing(client, bob, upstream, token):
    run = gateway_run(token, {"agent": "support-chat", "prompt": "Keep me"})
    client.force_login(bob)
    client.post(reverse("thread_rename", args=[run.upstream_thread_id]), {"title": "   "})
    thread = direct(upstream, "GET", f"/threads/{run.upstream_thread_id}").json()["data"]["thread"]
    assert thread["title"] == "Keep me"
    assert not AuditEvent.objects.filter(action="thread_renamed").exists()


def test_archive_and_restore(client, bob, upstream, token):
    run = gateway_run(token, {"agent": "support-chat", "prompt": "Archive me"})
    thread_id = run.upstream_thread_id
    client.force_login(bob)
    client.post(reverse("thread_archive", args=[thread_id]), {"archived": "true"})
    assert direct(upstream, "GET", f"/threads/{thread_id}").json()["data"]["thread"]["archived"]
    assert Thread.objects.get(upstream_id=thread_id).archived
    assert thread_id not in shown_threads(client.get(reverse("thread_list")))
    assert thread_id in shown_threads(client.get(reverse("thread_list") + "?show=archived"))
    client.post(reverse("thread_archive", args=[thread_id]), {"archived": "false"})
    assert not direct(upstream, "GET", f"/threads/{thread_id}").json()["data"]["thread"]["archived"]
    assert not Thread.objects.get(upstream_id=thread_id).archived
    actions = list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))
    assert actions[-2:] == ["thread_archived", "thread_unarchived"]


def test_delete_asks_first(client, bob, token):
    run = gateway_run(token, {"agent": "support-chat", "prompt": "Delete me"})
    client.force_login(bob)
    response = client.get(reverse("thread_delete", args=[run.upstream_thread_id]))
    html = response.content.decode()
    assert "Delete this thread?" in html and "1 recorded run" in html
    assert Run.objects.get(pk=run.pk).prompt == "Delete me"


def test_delete_removes_content_and_keeps_usage(client, bob, acme, upstream, token):
    first = gateway_run(token, {"agent": "code-assistant", "prompt": "Secret plan in app/x.py"})
    thread_id = first.upstream_thread_id
    second = gateway_run(
        token,
        {
            "agent": "code-assistant",
            "prompt": "More secrets",
            "threadId": thread_id,
            "metadata": {"k": "v"},
        },
    )
    Run.objects.filter(pk=first.pk).update(cost=Decimal("0.25"), cost_status="computed")
    other = gateway_run(token, {"agent": "code-assistant", "prompt": "Unrelated"})
    usage_before = list(
        DailyUsage.objects.values_list("runs", "input_tokens", "output_tokens", "cost")
    )
    assert RunEvent.objects.filter(run__in=[first, second]).exists()
    client.force_login(bob)
    response = client.post(reverse("thread_delete", args=[thread_id]))
    assert response.status_code == 302 and response["Location"] == reverse("thread_list")
    # Gone upstream.
    assert direct(upstream, "GET", f"/threads/{thread_id}").status_code == 404
    # Content gone here; usage, cost, status and timings kept.
    for before in (first, second):
        after = Run.objects.get(pk=before.pk)
        assert (after.prompt, after.result, after.messages, after.metadata) == ("", "", None, {})
        assert after.input_tokens == before.input_tokens
        assert after.output_tokens == before.output_tokens
        assert after.status == before.status and after.duration_ms == before.duration_ms
        assert after.frame_count == before.frame_count
    assert Run.objects.get(pk=first.pk).cost == Decimal("0.25")
    assert not RunEvent.objects.filter(run__in=[first, second]).exists()
    assert usage_before == list(
        DailyUsage.objects.values_list("runs", "input_tokens", "output_tokens", "cost")
    )
    thread = Thread.objects.get(upstream_id=thread_id)
    assert thread.deleted_at is not None and thread.title == ""
    # Another thread is untouched.
    assert Run.objects.get(pk=other.pk).prompt == "Unrelated"
    assert RunEvent.objects.filter(run=other).exists()
    event = AuditEvent.objects.get(action="thread_deleted")
    assert event.actor == bob and thread_id in event.target and "2 runs" in event.target
    # Not listed any more; its page says what happened.
    assert thread_id not in shown_threads(client.get(reverse("thread_list")))
    html = client.get(reverse("thread_detail", args=[thread_id])).content.decode()
    assert "Deleted thread" in html and "Secret plan" not in html


def test_a_thread_only_upstream_can_be_deleted(client, bob, upstream, token):
    gateway_run(token, {"agent": "support-chat", "prompt": "hi"})
    outside = outside_run(upstream, {"agent": "support-chat", "prompt": "Elsewhere"})
    client.force_login(bob)
    response = client.post(reverse("thread_delete", args=[outside["threadId"]]))
    assert response.status_code == 302
    assert direct(upstream, "GET", f"/threads/{outside['threadId']}").status_code == 404
    assert AuditEvent.objects.filter(action="thread_deleted").exists()


# --- Who may do what ----------------------------------------------------------------------


@pytest.fixture
def acme_thread(token) -> str:
    return gateway_run(token, {"agent": "support-chat", "prompt": "Acme's own"}).upstream_thread_id


def test_anonymous_is_sent_to_login(client, acme_thread):
    for name in ("thread_detail", "thread_delete"):
        response = client.get(reverse(name, args=[acme_thread]))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    for name in ("thread_rename", "thread_archive", "thread_delete"):
        response = client.post(reverse(name, args=[acme_thread]), {"title": "x"})
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    response = client.get(reverse("thread_list"))
    assert response.status_code == 302


def test_an_outsider_gets_404_and_changes_nothing(
    client, charlie, globex_key, upstream, acme_thread
):
    client.force_login(charlie)
    assert client.get(reverse("thread_detail", args=[acme_thread])).status_code == 404
    assert client.get(reverse("thread_delete", args=[acme_thread])).status_code == 404
    assert (
        client.post(reverse("thread_rename", args=[acme_thread]), {"title": "owned"}).status_code
        == 404
    )
    assert client.post(reverse("thread_archive", args=[acme_thread])).status_code == 404
    assert client.post(reverse("thread_delete", args=[acme_thread])).status_code == 404
    assert acme_thread not in shown_threads(client.get(reverse("thread_list")))
    upstream_thread = direct(upstream, "GET", f"/threads/{acme_thread}").json()["data"]["thread"]
    assert upstream_thread["title"] == "Acme's own" and not upstream_thread["archived"]
    thread = Thread.objects.get(upstream_id=acme_thread)
    assert thread.deleted_at is None and thread.title == "Acme's own"
    assert Run.objects.get(upstream_thread_id=acme_thread).prompt == "Acme's own"


def test_a_viewer_reads_but_cannot_change(client, victor, upstream, acme_thread):
    client.force_login(victor)
    assert client.get(reverse("thread_detail", args=[acme_thread])).status_code == 200
    html = client.get(reverse("thread_detail", args=[acme_thread])).content.decode()
    assert "Rename" not in html and "Delete" not in html
    assert (
        client.post(reverse("thread_rename", args=[acme_thread]), {"title": "x"}).status_code == 404
    )
    assert client.post(reverse("thread_archive", args=[acme_thread])).status_code == 404
    assert client.get(reverse("thread_delete", args=[acme_thread])).status_code == 404
    assert client.post(reverse("thread_delete", args=[acme_thread])).status_code == 404
    assert direct(upstream, "GET", f"/threads/{acme_thread}").status_code == 200


def test_wrong_methods_are_405(client, alice, acme_thread):
    client.force_login(alice)
    assert client.post(reverse("thread_list")).status_code == 405
    assert client.post(reverse("thread_detail", args=[acme_thread])).status_code == 405
    assert client.get(reverse("thread_rename", args=[acme_thread])).status_code == 405
    assert client.get(reverse("thread_archive", args=[acme_thread])).status_code == 405
    assert client.put(reverse("thread_delete", args=[acme_thread])).status_code == 405
