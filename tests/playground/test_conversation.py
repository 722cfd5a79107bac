"""The playground's conversation drawn by the server: a thread's turns, oldest first, with
their thinking, tool calls, footers and answers as safe Markdown."""

from __future__ import annotations

import json
from html import unescape

from django.urls import reverse

from runs.core.validation import validate_run
from runs.models import Run, RunEvent, Thread
from runs.pipeline.recording import start_run
from runs.playground.markdown import render_markdown

UNREACHABLE = "http://127.0.0.1:9/v1"


def _turn(team, user, prompt: str, result: str, thread: str = "thr_1", **fields) -> Run:
    body = {"agent": "deep-thinker", "prompt": prompt, "threadId": thread}
    run = start_run(
        team, validate_run(body, json.dumps(body).encode()), source="playground", user=user
    )
    run.status, run.result, run.upstream_thread_id = "completed", result, thread
    for name, value in fields.items():
        setattr(run, name, value)
    run.save()
    return run


def _page(client, user, query: str) -> str:
    client.force_login(user)
    return client.get(reverse("playground") + query).content.decode()


def test_markdown_keeps_markup_as_text():
    html = render_markdown('Hi <script>alert(1)</script> <img src="x" onerror="go()"> **b**')
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "<strong>b</strong>" in html


def test_markdown_links_only_to_safe_addresses():
    html = render_markdown("[a](https://x.org) [b](javascript:alert(1)) [c](/runs/1) ![d](data:x)")
    assert '<a href="https://x.org">a</a>' in html and '<a href="/runs/1">c</a>' in html
    assert "javascript:" not in html.replace("[b](javascript:alert(1))", "")
    assert 'href="data:' not in html and "<img" not in html


def test_markdown_draws_code_blocks():
    html = render_markdown("```python\nprint('<b>')\n```")
    assert "<pre><code class=\"language-python\">print('&lt;b&gt;')" in html


def test_a_thread_in_the_address_loads_its_turns_in_order(client, bob, acme, settings):
    settings.RUNTOOLS_API_URL = UNREACHABLE
    Thread.objects.create(team=acme, upstream_id="thr_1", agent="deep-thinker", title="Why?")
    first = _turn(acme, bob, "Why is the sky blue?", "Because of **Rayleigh**.", input_tokens=12)
    RunEvent.objects.create(
        run=first,
        sequence=1,
        event="assistant_thinking_delta",
        data=json.dumps({"delta": "Light scatters."}),
    )
    first.frame_count = 1
    first.save()
    _turn(acme, bob, "And sunsets?", "Longer path <i>through</i> air.")
    page = _page(client, bob, "?thread=thr_1&agent=deep-thinker")
    transcript = page.split('role="log"')[1]
    assert transcript.index("Why is the sky blue?") < transcript.index("And sunsets?")
    assert "Because of <strong>Rayleigh</strong>." in transcript
    assert "Longer path &lt;i&gt;through&lt;/i&gt; air." in transcript
    assert '<div class="thinking-text">Light scatters.</div>' in transcript
    assert f"Run #{first.pk}" in transcript and "12 in /" in transcript
    assert "first token" in transcript and "duration" in transcript
    assert transcript.count('class="turn-footer"') == 2
    assert '<option value="thr_1" data-agent="deep-thinker" selected>' in page


def test_another_teams_thread_shows_no_turns(client, charlie, acme, bob, settings):
    settings.RUNTOOLS_API_URL = UNREACHABLE
    Thread.objects.create(team=acme, upstream_id="thr_1", agent="deep-thinker")
    _turn(acme, bob, "Secret question", "Secret answer")
    page = _page(client, charlie, "?thread=thr_1")
    assert "Secret" not in page
    assert "not one of this team" in unescape(page)


def test_a_finished_run_in_the_address_continues_its_thread(client, bob, acme, settings):
    settings.RUNTOOLS_API_URL = UNREACHABLE
    Thread.objects.create(team=acme, upstream_id="thr_1", agent="deep-thinker")
    earlier = _turn(acme, bob, "First?", "One.")
    latest = _turn(acme, bob, "Second?", "Two.")
    page = _page(client, bob, f"?run={latest.pk}")
    transcript = page.split('role="log"')[1]
    # The earlier turn in the transcript; the run itself in its result card, once.
    assert f"Run #{earlier.pk}" in transcript and "First?" in transcript
    assert page.count("Two.") == 1 and 'id="result-card"' in page
    assert "data-watch" not in page
    # Sending again continues the thread, with an empty prompt box.
    assert '<option value="thr_1" data-agent="deep-thinker" selected>' in page
    assert '<textarea id="id_prompt" name="prompt" rows="6"></textarea>' in page
