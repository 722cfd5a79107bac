"""The runs list (filters, keyset pages, htmx fragments) and one run's page."""

from __future__ import annotations

import ast
import json
import re
import shlex
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from runs.history import filters
from runs.models import GatewayToken, RunEvent, RunToolsKey
from runs.pipeline.recording import rebuild_usage
from tests.conftest import ACME_KEY
from tests.helpers import NOW, gateway_run, make_run, shown_run_ids

pytestmark = pytest.mark.usefixtures("fast_passwords")

HTMX = {"HTTP_HX_REQUEST": "true"}


# --- Helpers ----------------------------------------------------------------------------


def page_url(**params) -> str:
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return reverse("run_list") + (f"?{query}" if query else "")


# --- Who may see what ---------------------------------------------------------------------


@pytest.fixture
def acme_run(acme, alice):
    return make_run(acme, user=alice, source="playground")


def test_it_requires_login(client, acme_run):
    for url in (reverse("run_list"), reverse("run_detail", args=[acme_run.pk])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_it_rejects_post(client, alice, acme_run):
    client.force_login(alice)
    assert client.post(reverse("run_list")).status_code == 405
    assert client.post(reverse("run_detail", args=[acme_run.pk])).status_code == 405


def test_an_outsider_gets_404_for_a_run(client, charlie, acme_run):
    client.force_login(charlie)
    assert client.get(reverse("run_detail", args=[acme_run.pk])).status_code == 404
    assert client.get(reverse("run_detail", args=[acme_run.pk]) + "?view=raw").status_code == 404


def test_an_outsider_never_lists_another_teams_runs(client, charlie, globex, acme_run):
    own = make_run(globex, user=charlie, prompt="globex question")
    client.force_login(charlie)
    response = client.get(reverse("run_list"))
    assert shown_run_ids(response) == [own.pk]
    # Not even by naming acme's thread or acme's member in the filters.
    make_run(acme_run.team, upstream_thread_id="thr_acme")
    response = client.get(page_url(thread="thr_acme"))
    assert shown_run_ids(response) == []
    response = client.get(page_url(who=f"user:{acme_run.user_id}"))
    assert shown_run_ids(response) == [own.pk]  # not a choice for globex: the filter is refused
    assert "not one of the available choices" in response.content.decode()


def test_a_viewer_can_read(client, victor, acme_run):
    client.force_login(victor)
    assert shown_run_ids(client.get(reverse("run_list"))) == [acme_run.pk]
    response = client.get(reverse("run_detail", args=[acme_run.pk]))
    assert response.status_code == 200
    # A viewer cannot run, so no re-run link.
    assert "from_run=" not in response.content.decode()


def test_a_member_can_rerun_in_the_playground(client, bob, acme_run):
    client.force_login(bob)
    response = client.get(reverse("run_detail", args=[acme_run.pk]))
    assert f"/playground?from_run={acme_run.pk}" in response.content.decode().replace("/?", "?")


# --- The list and its filters -------------------------------------------------------------


def test_it_lists_newest_first_with_the_columns(client, alice, acme, acme_token):
    token, _plaintext = acme_token
    old = make_run(acme, started_at=NOW - timedelta(hours=2), user=alice, source="playground")
    new = make_run(
        acme,
        started_at=NOW,
        token=token,
        agent="code-assistant",
        input_tokens=1480,
        output_tokens=322,
        duration_ms=65_000,
        cost=Decimal("0.012345"),
        cost_status="computed",
        upstream_thread_id="thr_1",
    )
    client.force_login(alice)
    response = client.get(reverse("run_list"))
    assert shown_run_ids(response) == [new.pk, old.pk]
    html = response.content.decode()
    row = html[html.index(f'data-run="{new.pk}"') : html.index(f'data-run="{old.pk}"')]
    assert "2026-03-10 12:00:00" in row
    assert "code-assistant" in row
    assert "token ci" in row
    assert "1,480 / 322" in row
    # Three significant digits under a dollar (runs.core.formatting.money).
    assert "$0.0123<" in row
    assert "1 min 5 s" in row
    assert reverse("thread_detail", args=["thr_1"]) in row


def test_an_unpriced_run_says_so_and_never_costs_zero(client, alice, acme):
    make_run(acme, cost=None, cost_status="unpriced")
    make_run(acme, cost=None, cost_status="pending", started_at=NOW - timedelta(minutes=1))
    client.force_login(alice)
    html = client.get(reverse("run_list")).content.decode()
    assert "unpriced" in html
    assert "pending" in html
    assert "$0" not in html


@pytest.fixture
def variety(acme, alice, bob, acme_token):
    """Runs that differ in one way each, so every filter has exactly one answer."""
    token, _plaintext = acme_token
    other_token, _ = GatewayToken.issue(acme, "nightly")
    return {
        "base": make_run(acme, started_at=NOW, token=token),
        "agent": make_run(acme, agent="deep-thinker", started_at=NOW - timedelta(minutes=1)),
        "status": make_run(acme, status="failed", started_at=NOW - timedelta(minutes=2)),
        "user": make_run(
            acme, user=bob, source="playground", started_at=NOW - timedelta(minutes=3)
        ),
        "token": make_run(acme, token=other_token, started_at=NOW - timedelta(minutes=4)),
        "old": make_run(acme, started_at=NOW - timedelta(days=3)),
        "thread": make_run(
            acme, upstream_thread_id="thr_wanted", started_at=NOW - timedelta(minutes=5)
        ),
        "meta": make_run(
            acme,
            metadata={"env": "staging", "attempt": 3, "debug": True},
            started_at=NOW - timedelta(minutes=6),
        ),
        "prompt": make_run(
            acme, prompt="Refund for the Zanzibar order", started_at=NOW - timedelta(minutes=7)
        ),
        "result": make_run(
            acme, result="Escalated to the Quokka team", started_at=NOW - timedelta(minutes=8)
        ),
        "messages": make_run(
            acme,
            prompt="",
            messages=[{"role": "user", "content": "Tell me about Ouagadougou"}],
            started_at=NOW - timedelta(minutes=9),
        ),
        "other_token": other_token,
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("agent=deep-thinker", "agent"),
        ("status=failed", "status"),
        ("source=playground", "user"),
        ("thread=thr_wanted", "thread"),
        ("meta=env%3Dstaging", "meta"),
        ("meta=attempt%3D3", "meta"),
        ("meta=debug%3Dtrue", "meta"),
        ("q=zanzibar", "prompt"),
        ("q=QUOKKA", "result"),
        ("q=Ouagadougou", "messages"),
        ("since=2026-03-07&until=2026-03-07", "old"),
    ],
)
def test_each_filter_finds_its_run(client, alice, variety, query, expected):
    client.force_login(alice)
    response = client.get(f"{reverse('run_list')}?{query}")
    assert response.status_code == 200
    assert shown_run_ids(response) == [variety[expected].pk]


def test_it_filters_by_user_and_by_token(client, alice, bob, variety):
    client.force_login(alice)
    assert shown_run_ids(client.get(page_url(who=f"user:{bob.pk}"))) == [variety["user"].pk]
    token = variety["other_token"]
    assert shown_run_ids(client.get(page_url(who=f"token:{token.pk}"))) == [variety["token"].pk]


def test_it_filters_by_a_date_range(client, alice, variety):
    client.force_login(alice)
    response = client.get(page_url(since="2026-03-10", until="2026-03-10"))
    shown = shown_run_ids(response)
    assert variety["old"].pk not in shown
    assert variety["base"].pk in shown and len(shown) == 10


def test_filters_combine(client, alice, acme, variety):
    wanted = make_run(acme, agent="deep-thinker", status="failed", started_at=NOW - timedelta(1))
    client.force_login(alice)
    response = client.get(page_url(agent="deep-thinker", status="failed"))
    assert shown_run_ids(response) == [wanted.pk]


def test_a_bad_filter_is_reported_and_not_applied(client, alice, variety):
    client.force_login(alice)
    response = client.get(page_url(since="yesterday", status="failed"))
    html = response.content.decode()
    assert "Enter a valid date" in html
    assert shown_run_ids(response) == [variety["status"].pk]
    response = client.get(page_url(meta="no-equals-sign"))
    assert "key=value" in response.content.decode()
    assert len(shown_run_ids(response)) == 11


def test_a_metadata_key_is_data_not_a_lookup(client, alice, acme):
    run = make_run(acme, metadata={"a__contains": "x"})
    make_run(acme, metadata={"a": {"contains": "x"}}, started_at=NOW - timedelta(1))
    client.force_login(alice)
    response = client.get(page_url(meta="a__contains%3Dx"))
    assert shown_run_ids(response) == [run.pk]


def test_the_filters_live_in_the_url_and_links_keep_them(client, alice, variety):
    client.force_login(alice)
    html = client.get(page_url(agent="deep-thinker", q="x y")).content.decode()
    assert 'value="deep-thinker" selected' in html
    assert "export.csv?agent=deep-thinker&amp;q=x+y" in html
    assert "export.jsonl?agent=deep-thinker&amp;q=x+y" in html


# --- Keyset pages -------------------------------------------------------------------------


def _walk(client, url: str) -> list[int]:
    """Follow the "older" links to the end, the way the htmx rows do."""
    seen: list[int] = []
    while url:
        response = client.get(url, **HTMX, HTTP_HX_TARGET="more-runs")
        seen += shown_run_ids(response)
        match = re.search(
            r'id="more-runs">\s*<td[^>]*>\s*(?:<span[^>]*>[^<]*</span>\s*)?'
            r'<a href="([^"]+)"',
            response.content.decode(),
        )
        url = reverse("run_list") + match.group(1).replace("&amp;", "&") if match else ""
    return seen


def test_pages_continue_by_keyset_without_gaps_or_repeats(client, alice, acme):
    # Ties on started_at across page boundaries are the case OFFSET-free paging must handle.
    runs = [
        make_run(acme, started_at=NOW - timedelta(seconds=index // 3), prompt=f"run {index}")
        for index in range(130)
    ]
    client.force_login(alice)
    first = client.get(reverse("run_list"))
    assert len(shown_run_ids(first)) == filters.PAGE_SIZE
    seen = _walk(client, reverse("run_list"))
    expected = sorted(runs, key=lambda r: (r.started_at, r.pk), reverse=True)
    assert seen == [run.pk for run in expected]


def test_a_page_continues_with_the_filters(client, alice, acme):
    wanted = [
        make_run(acme, agent="deep-thinker", started_at=NOW - timedelta(minutes=i))
        for i in range(60)
    ]
    for i in range(60):
        make_run(acme, agent="support-chat", started_at=NOW - timedelta(minutes=i, seconds=30))
    client.force_login(alice)
    seen = _walk(client, page_url(agent="deep-thinker"))
    assert seen == [run.pk for run in wanted]


def test_a_malformed_cursor_starts_at_the_newest_run(client, alice, acme):
    run = make_run(acme)
    client.force_login(alice)
    for cursor in ("garbage", "1.2.3", "99999999999999999999999.1", ""):
        assert shown_run_ids(client.get(page_url(before=cursor))) == [run.pk]


def test_a_text_search_stops_at_its_budget_and_offers_to_go_on(client, alice, acme, monkeypatch):
    monkeypatch.setattr(filters, "SCAN_BUDGET", 5)
    old = make_run(acme, prompt="the needle", started_at=NOW - timedelta(days=20))
    for day in range(10):
        make_run(acme, prompt="hay", started_at=NOW - timedelta(days=day))
    rebuild_usage(acme)
    client.force_login(alice)
    response = client.get(page_url(q="needle"))
    html = response.content.decode()
    assert shown_run_ids(response) == []
    assert "searched back to" in html and "Search older runs" in html
    assert _walk(client, page_url(q="needle")) == [old.pk]


# --- htmx fragments -----------------------------------------------------------------------


def test_htmx_gets_only_the_table(client, alice, variety):
    client.force_login(alice)
    response = client.get(page_url(status="failed"), **HTMX, HTTP_HX_TARGET="run-table")
    html = response.content.decode()
    assert html.startswith('<section id="run-table"')
    assert "<html" not in html and 'id="run-filters"' not in html
    assert shown_run_ids(response) == [variety["status"].pk]


def test_a_history_restore_gets_the_whole_page(client, alice, variety):
    client.force_login(alice)
    response = client.get(
        page_url(status="failed"),
        **HTMX,
        HTTP_HX_TARGET="run-table",
        HTTP_HX_HISTORY_RESTORE_REQUEST="true",
    )
    assert "<html" in response.content.decode()


# --- One run ------------------------------------------------------------------------------

pytest_gateway = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token_plaintext(upstream, acme_key, acme_token):
    return acme_token[1]


@pytest_gateway
def test_it_shows_everything_about_a_run(client, alice, token_plaintext):
    run = gateway_run(
        token_plaintext,
        {
            "agent": "code-assistant",
            "prompt": "Run the tests in app/models.py",
            "config": {"maxTurns": 12},
            "metadata": {"env": "prod"},
        },
    )
    client.force_login(alice)
    html = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    for text in (
        run.upstream_run_id,
        run.sandbox_id,
        run.upstream_thread_id,
        "In sandbox",
        f"{run.input_tokens:,} / {run.output_tokens:,}",
        "unpriced",
        "Run the tests in app/models.py",
        "First token",
        "rtdash overhead",
        "&quot;maxTurns&quot;: 12",
        "&quot;env&quot;: &quot;prod&quot;",
        reverse("thread_detail", args=[run.upstream_thread_id]),
    ):
        assert text in html, text
    assert run.result and run.result.replace('"', "&quot;") in html
    # The timeline: both tool calls with their input and output, and the final message.
    timeline = html[html.index('id="run-events"') :]
    assert timeline.count('class="item tool"') == 2
    assert "read_file" in timeline and "&quot;path&quot;: &quot;app/models.py&quot;" in timeline
    assert "run_tests" in timeline and "passed in" in timeline
    assert 'class="item message"' in timeline and 'class="item completed"' in timeline


@pytest_gateway
def test_the_timeline_shows_thinking_errors_and_unknown_frames(client, alice, token_plaintext):
    thinker = gateway_run(
        token_plaintext,
        {
            "agent": "deep-thinker",
            "prompt": "Why?",
            "metadata": {"simulate": {"unknownFrames": True, "nonJsonFrame": True}},
        },
    )
    failing = gateway_run(
        token_plaintext,
        {"agent": "support-chat", "prompt": "hi", "metadata": {"simulate": {"errorAfter": 2}}},
    )
    client.force_login(alice)
    html = client.get(reverse("run_detail", args=[thinker.pk])).content.decode()
    assert 'class="item thinking"' in html and "Let me split it into parts" in html
    assert "sandbox_status" in html and "x_custom_metric" in html
    assert "hello, plain text" in html
    html = client.get(reverse("run_detail", args=[failing.pk])).content.decode()
    assert 'class="item error"' in html
    assert "simulated provider failure after 2 frames" in html


@pytest_gateway
def test_raw_frames_are_paged_and_toggle_with_htmx(client, alice, token_plaintext):
    run = gateway_run(
        token_plaintext,
        {"agent": "support-chat", "prompt": "count", "metadata": {"simulate": {"deltas": 450}}},
    )
    stored = RunEvent.objects.filter(run=run).count()
    assert stored > 400
    client.force_login(alice)
    url = reverse("run_detail", args=[run.pk])
    response = client.get(url + "?view=raw", **HTMX, HTTP_HX_TARGET="run-events")
    html = response.content.decode()
    assert html.startswith('<section id="run-events"')
    assert html.count('class="frame"') == 200
    seen = 200
    match = re.search(r'hx-get="([^"]+after=(\d+))"', html)
    while match:
        response = client.get(
            match.group(1).replace("&amp;", "&"), **HTMX, HTTP_HX_TARGET="more-frames"
        )
        html = response.content.decode()
        seen += html.count('class="frame"')
        match = re.search(r'hx-get="([^"]+after=(\d+))"', html)
    assert seen == stored
    # And back to the timeline, still without the page around it.
    response = client.get(url, **HTMX, HTTP_HX_TARGET="run-events")
    assert 'class="timeline"' in response.content.decode()


def test_a_pruned_run_says_its_frames_are_gone(client, alice, acme):
    run = make_run(acme, frame_count=12)
    client.force_login(alice)
    html = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert "12 frames are no longer stored" in html


def _code_blocks(html: str) -> tuple[str, str]:
    import html as html_lib

    curl = re.search(r'<pre class="code-curl">(.*?)</pre>', html, re.S).group(1)
    python = re.search(r'<pre class="code-python">(.*?)</pre>', html, re.S).group(1)
    return html_lib.unescape(curl), html_lib.unescape(python)


@pytest_gateway
def test_view_code_repeats_the_request_with_a_token_variable(client, alice, token_plaintext):
    body = {
        "agent": "support-chat",
        "prompt": "It's a \"quoted\" prompt with 'single quotes' and $HOME",
        "stream": False,
        "config": {"maxTokens": 500},
        "metadata": {"env": "prod", "ticket": 42},
    }
    first = gateway_run(token_plaintext, body)
    second = gateway_run(token_plaintext, {**body, "threadId": first.upstream_thread_id})
    client.force_login(alice)
    for run, continues in ((first, False), (second, True)):
        html = client.get(reverse("run_detail", args=[run.pk])).content.decode()
        curl, python = _code_blocks(html)
        expected = {**body, "stream": False}
        if continues:
            expected["threadId"] = first.upstream_thread_id
        # The curl command, split as a shell would: the body is exactly the request.
        words = shlex.split(curl.replace("\\\n", " "))
        assert words[words.index("--data-binary") + 1] and json.loads(
            words[words.index("--data-binary") + 1]
        ) == {
            key: expected[key]
            for key in ("agent", "prompt", "threadId", "stream", "config", "metadata")
            if key in expected
        }
        assert "http://testserver/v1/run" in words
        assert "X-API-Key: $RTDASH_TOKEN" in words
        # The Python version is valid Python sending the same body.
        tree = ast.parse(python)
        assigned = {
            node.targets[0].id: node.value for node in tree.body if isinstance(node, ast.Assign)
        }
        assert ast.literal_eval(assigned["body"]) == json.loads(
            words[words.index("--data-binary") + 1]
        )
        assert 'os.environ["RTDASH_TOKEN"]' in python
        # Never a real secret.
        for secret in (ACME_KEY, token_plaintext):
            assert secret not in html
    assert RunToolsKey.objects.filter(team=first.team).exists()
