"""Exports of the filtered runs: CSV and JSON Lines, streamed, never another team's rows."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse

from runs.models import AuditEvent
from tests.helpers import NOW, make_run

# Async tests: the views run in a worker thread with its own connection.
pytestmark = [pytest.mark.usefixtures("fast_passwords"), pytest.mark.django_db(transaction=True)]


async def _body(response) -> tuple[str, int]:
    """The streamed body and how many chunks it came in."""
    chunks = [chunk async for chunk in response.streaming_content]
    return b"".join(chunks).decode(), len(chunks)


def _csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def mixed(acme, globex, alice, charlie):
    acme_runs = [
        make_run(
            acme,
            user=alice,
            source="playground",
            agent="code-assistant" if index % 2 else "support-chat",
            prompt=f"acme prompt {index}",
            started_at=NOW - timedelta(minutes=index),
            upstream_thread_id=f"thr_acme_{index}",
            metadata={"index": index},
        )
        for index in range(6)
    ]
    globex_run = make_run(globex, user=charlie, prompt="globex prompt", agent="code-assistant")
    return acme_runs, globex_run


def test_it_requires_login(client, db):
    for fmt in ("csv", "jsonl"):
        response = client.get(reverse("run_export", args=[fmt]))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_it_rejects_post(client, alice):
    client.force_login(alice)
    assert client.post(reverse("run_export", args=["csv"])).status_code == 405


def test_an_unknown_format_is_404(client, alice):
    client.force_login(alice)
    assert client.get(reverse("run_export", args=["xlsx"])).status_code == 404


async def test_csv_is_the_filtered_runs_newest_first(async_client, alice, mixed):
    acme_runs, _globex_run = mixed
    await async_client.aforce_login(alice)
    response = await async_client.get(reverse("run_export", args=["csv"]) + "?agent=code-assistant")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="runs-acme-')
    text, _chunks = await _body(response)
    rows = _csv_rows(text)
    expected = [run for run in acme_runs if run.agent == "code-assistant"]
    assert [int(row["id"]) for row in rows] == [run.pk for run in expected]
    first = rows[0]
    assert first["agent"] == "code-assistant"
    assert first["user"] == "alice"
    assert first["thread"] == expected[0].upstream_thread_id
    assert first["prompt"] == expected[0].prompt
    assert json.loads(first["metadata"]) == expected[0].metadata
    assert first["cost"] == ""  # no price: empty, never 0
    assert first["cost_status"] == "unpriced"


async def test_json_lines_carry_every_field_as_json(async_client, alice, acme):
    run = await sync_to_async(make_run)(
        acme,
        prompt="",
        messages=[{"role": "user", "content": "hello"}],
        config={"maxTurns": 3},
        metadata={"env": "prod", "n": 1},
        cost=Decimal("0.000123456"),
        cost_status="computed",
        reasoning_tokens=77,
    )
    await async_client.aforce_login(alice)
    response = await async_client.get(reverse("run_export", args=["jsonl"]))
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    text, _chunks = await _body(response)
    lines = text.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["id"] == run.pk
    assert record["messages"] == [{"role": "user", "content": "hello"}]
    assert record["config"] == {"maxTurns": 3}
    assert record["metadata"] == {"env": "prod", "n": 1}
    assert record["cost"] == "0.000123456"
    assert record["reasoning_tokens"] == 77
    assert record["started_at"] == run.started_at.isoformat()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_an_outsiders_export_never_holds_another_teams_runs(
    async_client, charlie, mixed, fmt
):
    acme_runs, globex_run = mixed
    await async_client.aforce_login(charlie)
    # Even when asking for acme's thread or agent explicitly.
    for query in ("", "?agent=code-assistant", f"?thread={acme_runs[1].upstream_thread_id}"):
        response = await async_client.get(reverse("run_export", args=[fmt]) + query)
        text, _chunks = await _body(response)
        assert "acme prompt" not in text
        if not query or "agent" in query:
            assert "globex prompt" in text
    response = await async_client.get(reverse("run_export", args=[fmt]))
    text, _chunks = await _body(response)
    if fmt == "csv":
        assert [int(row["id"]) for row in _csv_rows(text)] == [globex_run.pk]
    else:
        assert [json.loads(line)["id"] for line in text.splitlines()] == [globex_run.pk]


async def test_a_large_export_is_streamed_in_chunks(async_client, alice, acme):
    from runs.models import Run

    await Run.objects.abulk_create(
        Run(
            team=acme,
            source="gateway",
            agent="support-chat",
            status="completed",
            prompt=f"prompt {index}",
            started_at=NOW - timedelta(seconds=index),
        )
        for index in range(2600)
    )
    await async_client.aforce_login(alice)
    response = await async_client.get(reverse("run_export", args=["jsonl"]))
    # An async iterator: under ASGI Django sends it as it is produced (a plain iterator
    # would be read to the end first).
    assert response.streaming and response.is_async
    text, chunks = await _body(response)
    assert len(text.splitlines()) == 2600
    assert chunks >= 5  # written 500 runs at a time, not as one body


async def test_spreadsheet_formulas_in_upstream_text_are_neutralised(async_client, alice, acme):
    await sync_to_async(make_run)(
        acme, prompt='=HYPERLINK("http://evil","x")', result="+SUM(A1)", agent="@agent"
    )
    await async_client.aforce_login(alice)
    response = await async_client.get(reverse("run_export", args=["csv"]))
    text, _chunks = await _body(response)
    row = _csv_rows(text)[0]
    assert row["prompt"] == '\'=HYPERLINK("http://evil","x")'
    assert row["result"] == "'+SUM(A1)"
    assert row["agent"] == "'@agent"


async def test_an_export_is_audited(async_client, alice, acme):
    await sync_to_async(make_run)(acme)
    await async_client.aforce_login(alice)
    response = await async_client.get(reverse("run_export", args=["csv"]) + "?status=failed")
    await _body(response)
    event = await AuditEvent.objects.aget(action="runs_exported")
    assert event.team_id == acme.pk
    assert event.target == "csv: status=failed"


async def test_a_viewer_can_export(async_client, victor, acme):
    run = await sync_to_async(make_run)(acme)
    await async_client.aforce_login(victor)
    response = await async_client.get(reverse("run_export", args=["jsonl"]))
    text, _chunks = await _body(response)
    assert json.loads(text)["id"] == run.pk
