"""A /v1/run request as code to send it again: curl, Python (httpx) and JavaScript (fetch).

One generator for every "View code" panel (the playground's form, a run's page), so the
snippets agree with each other and with the gateway. Each sends exactly `body` to `url`
(rtdash's gateway) with the gateway token read from the environment, `RTDASH_TOKEN`: never
a key or a token of the team's, which the page must not show.
"""

from __future__ import annotations

import json
import pprint
import shlex
from dataclasses import dataclass
from typing import Any

# The name of the environment variable the snippets read, not a token.
TOKEN_VARIABLE = "RTDASH_TOKEN"  # noqa: S105


@dataclass(frozen=True)
class Snippets:
    curl: str
    python: str
    javascript: str


def request_snippets(body: dict[str, Any], url: str) -> Snippets:
    """The request `body` to `url`, streamed (SSE read as it comes) when `body` says so."""
    stream = body.get("stream", True) is not False
    return Snippets(
        curl=_curl(body, url, stream),
        python=_python(body, url, stream),
        javascript=_javascript(body, url, stream),
    )


def _curl(body: dict[str, Any], url: str, stream: bool) -> str:
    # The body as one shell-quoted argument: no here-document whose end marker a prompt
    # could contain, and `$` or backquotes in a prompt stay text.
    data = json.dumps(body, indent=2, ensure_ascii=False)
    return "\n".join(
        [
            f"curl {'-N ' if stream else ''}{shlex.quote(url)} \\",
            f'  -H "X-API-Key: ${TOKEN_VARIABLE}" \\',
            '  -H "Content-Type: application/json" \\',
            f"  --data-binary {shlex.quote(data)}",
        ]
    )


def _python(body: dict[str, Any], url: str, stream: bool) -> str:
    # A real dict literal sent with json=: True/None, not JSON's true/null.
    literal = pprint.pformat(body, indent=1, width=88, sort_dicts=False)
    if stream:
        send = (
            'with httpx.stream("POST", url, headers=headers, json=body, timeout=None)'
            " as response:\n"
            "    response.raise_for_status()\n"
            "    for line in response.iter_lines():\n"
            "        print(line)"
        )
    else:
        send = (
            "response = httpx.post(url, headers=headers, json=body, timeout=None)\n"
            "response.raise_for_status()\n"
            'print(response.json()["data"]["result"])'
        )
    return "\n".join(
        [
            "import os",
            "",
            "import httpx",
            "",
            f"body = {literal}",
            f"url = {json.dumps(url)}",
            f'headers = {{"X-API-Key": os.environ["{TOKEN_VARIABLE}"]}}',
            send,
        ]
    )


def _javascript(body: dict[str, Any], url: str, stream: bool) -> str:
    # JSON is a JavaScript object literal (U+2028 included since ES2019); the snippet is an
    # ES module for Node 18+ (`node request.mjs`), where fetch is built in.
    literal = json.dumps(body, indent=2, ensure_ascii=False)
    if stream:
        read = (
            "const reader = response.body.getReader();\n"
            "const decoder = new TextDecoder();\n"
            "for (;;) {\n"
            "  const { done, value } = await reader.read();\n"
            "  if (done) break;\n"
            "  process.stdout.write(decoder.decode(value, { stream: true }));\n"
            "}"
        )
    else:
        read = "const { data } = await response.json();\nconsole.log(data.result);"
    return "\n".join(
        [
            f"const body = {literal};",
            "",
            f"const response = await fetch({json.dumps(url)}, {{",
            '  method: "POST",',
            "  headers: {",
            f'    "X-API-Key": process.env.{TOKEN_VARIABLE},',
            '    "Content-Type": "application/json",',
            "  },",
            "  body: JSON.stringify(body),",
            "});",
            "if (!response.ok) {",
            "  throw new Error(`${response.status}: ${await response.text()}`);",
            "}",
            read,
        ]
    )
