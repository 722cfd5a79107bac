"""Upstream content is hostile: every page shows it as text, never as markup.

Prompts, results, tool input and output, metadata, frames, error messages, thread titles and
agent names all come from callers or from RunTools. Each is planted with script tags and HTML
and every page and fragment that shows it is checked for the escaped form and the absence of
the raw one.
"""

from __future__ import annotations

import json

import httpx
import pytest
from django.urls import reverse

from runs.models import Run, RunEvent, Thread
from tests.conftest import ACME_KEY
from tests.helpers import gateway_run, make_run

pytestmark = pytest.mark.usefixtures("fast_passwords")

SCRIPT = "<script>alert('pwned')</script>"
IMG = '<img src=x onerror="alert(1)">'
HOSTILE = f"{SCRIPT} and {IMG} and </pre></textarea><b>bold</b>"
HTMX = {"HTTP_HX_REQUEST": "true"}


def assert_inert(html: str) -> None:
    """No planted tag survives as markup; rtdash's own templates contain none of these."""
    for raw in (SCRIPT, "<img src=x", "<b>bold</b>", "</textarea>"):
        assert raw not in html, f"unescaped {raw!r}"
    # The text is there, escaped.
    assert "&lt;script&gt;alert(" in html


@pytest.fixture
def hostile_run(acme, alice):
    thread = Thread.objects.create(team=acme, upstream_id="thr_evil", agent=HOSTILE, title=HOSTILE)
    run = make_run(
        acme,
        user=alice,
        agent=HOSTILE,
        prompt=HOSTILE,
        result=HOSTILE,
        metadata={HOSTILE: HOSTILE, "env": SCRIPT},
        config={"note": HOSTILE},
        usage={"inputTokens": 5, HOSTILE: 1},
        error_code=SCRIPT,
        error_message=HOSTILE,
        status="failed",
        upstream_thread_id="thr_evil",
        upstream_run_id=SCRIPT,
        sandbox_id=IMG,
        execution_mode=SCRIPT,
        thread=thread,
        frame_count=9,
    )
    frames = [
        ("run_started", {"type": "run_started", "runId": SCRIPT, "sandboxId": IMG}),
        ("assistant_thinking_delta", {"type": "assistant_thinking_delta", "delta": HOSTILE}),
        (
            "tool_call_started",
            {
                "type": "tool_call_started",
                "toolCallId": SCRIPT,
                "tool": IMG,
                "input": {IMG: HOSTILE},
            },
        ),
        (
            "tool_output_delta",
            {"type": "tool_output_delta", "toolCallId": SCRIPT, "delta": HOSTILE},
        ),
        (
            "tool_call_completed",
            {
                "type": "tool_call_completed",
                "toolCallId": SCRIPT,
                "output": HOSTILE,
                "isError": True,
            },
        ),
        ("assistant_message_delta", {"type": "assistant_message_delta", "delta": HOSTILE}),
        (SCRIPT, {"type": SCRIPT, "value": HOSTILE}),
        ("error", {"type": "error", "error": {"code": SCRIPT, "message": HOSTILE}}),
    ]
    RunEvent.objects.bulk_create(
        RunEvent(run=run, sequence=index, event=event, data=json.dumps(data))
        for index, (event, data) in enumerate(frames, start=1)
    )
    RunEvent.objects.create(run=run, sequence=9, event="note", data=HOSTILE)
    return run


def test_the_runs_list_escapes_everything(client, alice, hostile_run):
    client.force_login(alice)
    assert_inert(client.get(reverse("run_list")).content.decode())
    response = client.get(reverse("run_list") + "?q=script", **HTMX, HTTP_HX_TARGET="run-table")
    assert_inert(response.content.decode())
    # A hostile filter value is echoed back escaped too.
    response = client.get(reverse("run_list"), {"q": HOSTILE, "agent": HOSTILE, "meta": f"k={IMG}"})
    html = response.content.decode()
    for raw in (SCRIPT, "<img src=x", "<b>bold</b>"):
        assert raw not in html


def test_the_run_page_escapes_everything(client, alice, hostile_run):
    client.force_login(alice)
    url = reverse("run_detail", args=[hostile_run.pk])
    html = client.get(url).content.decode()
    assert_inert(html)
    # Every kind of item made it into the timeline (so each was actually rendered).
    for kind in ("start", "thinking", "tool", "text", "other", "error"):
        assert f'class="item {kind}"' in html, kind
    assert_inert(client.get(url + "?view=raw").content.decode())
    assert_inert(
        client.get(url + "?view=raw", **HTMX, HTTP_HX_TARGET="run-events").content.decode()
    )


def test_the_code_snippets_escape_the_request(client, alice, hostile_run):
    client.force_login(alice)
    html = client.get(reverse("run_detail", args=[hostile_run.pk])).content.decode()
    start = html.index('class="code-curl"')
    snippets = html[start : html.index("</details>", start)]
    assert "&lt;script&gt;" in snippets
    assert SCRIPT not in snippets


def test_the_thread_pages_escape_everything(client, alice, hostile_run):
    client.force_login(alice)
    assert_inert(client.get(reverse("thread_list")).content.decode())
    assert_inert(client.get(reverse("thread_detail", args=["thr_evil"])).content.decode())
    assert_inert(client.get(reverse("thread_delete", args=["thr_evil"])).content.decode())


@pytest.mark.django_db(transaction=True)
def test_hostile_text_from_a_real_run_is_escaped(client, alice, upstream, acme_key, acme_token):
    """The simulator quotes the prompt back in its answer, thinking and tool output."""
    _token, plaintext = acme_token
    prompt = f"{SCRIPT} {IMG} app/models.py"
    runs = [
        gateway_run(plaintext, {"agent": agent, "prompt": prompt, "metadata": {"note": IMG}})
        for agent in ("code-assistant", "deep-thinker")
    ]
    frames = "".join(RunEvent.objects.filter(run__in=runs).values_list("data", flat=True))
    assert SCRIPT in frames  # the hostile text really came back from upstream
    client.force_login(alice)
    for run in runs:
        assert SCRIPT in run.result
        for suffix in ("", "?view=raw"):
            assert_inert(client.get(reverse("run_detail", args=[run.pk]) + suffix).content.decode())
        assert_inert(
            client.get(reverse("thread_detail", args=[run.upstream_thread_id])).content.decode()
        )
    assert_inert(client.get(reverse("run_list")).content.decode())


@pytest.mark.django_db(transaction=True)
def test_hostile_text_from_upstream_only_threads_is_escaped(
    client, alice, upstream, acme_key, acme_token
):
    _token, plaintext = acme_token
    gateway_run(plaintext, {"agent": "support-chat", "prompt": "hello", "stream": False})
    # A thread made outside rtdash, straight against RunTools: rtdash only learns of it there.
    response = httpx.post(
        f"{upstream.url}/run",
        json={"agent": "support-chat", "prompt": f"{SCRIPT} {IMG}", "stream": False},
        headers={"X-API-Key": ACME_KEY},
    )
    outside = response.json()["data"]["threadId"]
    assert not Run.objects.filter(upstream_thread_id=outside).exists()
    client.force_login(alice)
    html = client.get(reverse("thread_list")).content.decode()
    assert outside in html
    assert_inert(html)
    assert_inert(client.get(reverse("thread_detail", args=[outside])).content.decode())


@pytest.mark.django_db(transaction=True)
async def test_exports_are_data_not_html(async_client, alice, hostile_run):
    await async_client.aforce_login(alice)
    response = await async_client.get(reverse("run_export", args=["jsonl"]))
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert response["Content-Disposition"].startswith("attachment;")
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert json.loads(body)["prompt"] == HOSTILE  # exact, as data


def test_an_upstream_id_no_url_can_hold_does_not_break_pages(client, alice, acme):
    """A thread id with a slash cannot be routed: it is shown, unlinked, and nothing fails."""
    odd = "thr/../../agents"
    run = make_run(acme, upstream_thread_id=odd)
    Thread.objects.create(team=acme, upstream_id=odd, agent="support-chat", title="Odd one")
    client.force_login(alice)
    pages = ("run_list", "thread_list", "overview")
    urls = [reverse(name) for name in pages]
    urls += [reverse("run_detail", args=[run.pk]), reverse("playground_card", args=[run.pk])]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert "/threads/thr/" not in response.content.decode()
    assert odd in client.get(reverse("run_detail", args=[run.pk])).content.decode()
