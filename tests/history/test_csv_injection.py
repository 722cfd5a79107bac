"""CSV exports never hand a spreadsheet a formula: through the real history and report exports.

Spreadsheets skip leading blanks and accept the full-width forms of = + - @ before deciding a
cell is a formula, so those must be neutralised too, while plain text and real numbers stay as
they are.
"""

from __future__ import annotations

import csv
import io

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse

from tests.helpers import login, make_run
from tests.reporting import finished_run, set_price

# Text a spreadsheet would run as a formula, each a way past a check of the first character.
FORMULAS = [
    "=1+1",
    " =1+1",
    "   +SUM(A1)",
    '\n=HYPERLINK("http://evil")',
    "\r\n=cmd|' /C calc'!A0",
    " \n\t-2+3",
    "\u3000=1+1",  # ideographic space
    "\u00a0@SUM(A1)",  # no-break space
    "\u200b=1",  # zero-width space
    "\uff1d1+1",  # full-width =
    "\uff0bSUM(A1)",  # full-width +
    "\uff0d2+3",  # full-width -
    "\uff20SUM(A1)",  # full-width @
    "  \uff1dHYPERLINK(1)",
    "\tplain after a tab",
    "\rplain after a carriage return",
]
# Agent names cannot hold control characters (the run is refused), so the report export gets
# the formulas an agent name can carry.
AGENT_FORMULAS = [text for text in FORMULAS if not any(c in text for c in "\t\r\n")]
HARMLESS = ["plain text", "a=b", "total - 3", "email@example.com", "", "  indented"]


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


async def _history_csv(async_client, user) -> list[dict]:
    await async_client.aforce_login(user)
    response = await async_client.get(reverse("run_export", args=["csv"]))
    assert response.status_code == 200
    chunks = [chunk async for chunk in response.streaming_content]
    return _rows(b"".join(chunks).decode())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_passwords")
async def test_history_csv_neutralises_every_formula(async_client, alice, acme):
    for text in FORMULAS:
        await sync_to_async(make_run)(acme, prompt=text, result=text, agent="support-chat")
    rows = await _history_csv(async_client, alice)
    assert sorted(row["prompt"] for row in rows) == sorted("'" + text for text in FORMULAS)
    assert sorted(row["result"] for row in rows) == sorted("'" + text for text in FORMULAS)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_passwords")
async def test_history_csv_keeps_harmless_text_and_numbers(async_client, alice, acme):
    for text in HARMLESS:
        await sync_to_async(make_run)(acme, prompt=text, result=text, input_tokens=1234)
    rows = await _history_csv(async_client, alice)
    assert sorted(row["prompt"] for row in rows) == sorted(HARMLESS)
    assert {row["input_tokens"] for row in rows} == {"1234"}


@pytest.mark.django_db
def test_report_csv_neutralises_formulas_in_agent_names(client, alice, acme):
    set_price(acme)
    for agent in [*AGENT_FORMULAS, "code-assistant"]:
        finished_run(acme, agent=agent, usage={"inputTokens": 10, "outputTokens": 5})
    login(client, alice)
    response = client.get("/reports/export.csv?period=7d&group_by=agent")
    assert response.status_code == 200
    rows = _rows(response.content.decode())
    by_agent = [row for row in rows if row["label"] != "TOTAL"]
    expected = sorted([*("'" + agent for agent in AGENT_FORMULAS), "code-assistant"])
    assert sorted(row["key"] for row in by_agent) == expected
    assert sorted(row["label"] for row in by_agent) == expected
    # Counts and the cost stay numbers a spreadsheet can add up.
    assert {row["runs"] for row in by_agent} == {"1"}
    assert all(row["cost"][:1].isdigit() for row in rows)
