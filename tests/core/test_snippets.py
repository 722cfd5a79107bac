"""The "View code" snippets (runs.core.snippets): each sends exactly the body, with the token
from the environment, and each really runs against rtdash's gateway."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import time

import pytest

from runs.core.snippets import request_snippets
from runs.models import Run
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.live import RtdashServer

URL = "http://rtdash.example/v1/run"
BODY = {
    "agent": "support-chat",
    "prompt": 'It\'s "quoted" and\nmultiline $HOME `x` \u2028 é\nJSON\n',
    "stream": True,
    "config": {"maxTokens": 100, "temperature": 0.5},
    "metadata": {"flag": True, "none": None, "nested": {"a": [1, 2]}},
}
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")


def _curl_arguments(curl: str) -> list[str]:
    """The arguments the shell hands to curl when it runs the snippet as written."""
    printed = subprocess.run(
        ["bash", "-c", 'curl() { printf "%s\\0" "$@"; }\n' + curl],
        capture_output=True,
        text=True,
        check=True,
        env={"RTDASH_TOKEN": "tok", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
    ).stdout
    return printed.split("\0")[:-1]


def test_the_curl_snippet_sends_the_body_unchanged_through_the_shell():
    arguments = _curl_arguments(request_snippets(BODY, URL).curl)
    assert json.loads(arguments[arguments.index("--data-binary") + 1]) == BODY
    assert URL in arguments
    assert "X-API-Key: tok" in arguments  # the shell reads the token from the environment
    assert "-N" in arguments  # streamed: no buffering of the events


def test_the_curl_snippet_does_not_buffer_only_when_streaming():
    arguments = _curl_arguments(request_snippets({**BODY, "stream": False}, URL).curl)
    assert "-N" not in arguments


def test_the_python_snippet_sends_a_real_dict_with_json():
    python = request_snippets(BODY, URL).python
    tree = ast.parse(python)
    assigned = {
        node.targets[0].id: node.value for node in tree.body if isinstance(node, ast.Assign)
    }
    assert ast.literal_eval(assigned["body"]) == BODY
    assert "json=body" in python
    assert 'os.environ["RTDASH_TOKEN"]' in python


@needs_node
def test_the_javascript_snippet_sends_the_same_body(tmp_path):
    javascript = request_snippets(BODY, URL).javascript
    # Everything up to the request, then print what would be sent.
    script = javascript[: javascript.index("const response")]
    script += "process.stdout.write(JSON.stringify(body));\n"
    path = tmp_path / "body.mjs"
    path.write_text(script)
    printed = subprocess.run([NODE, str(path)], capture_output=True, text=True, check=True)
    assert json.loads(printed.stdout) == BODY
    assert "process.env.RTDASH_TOKEN" in javascript
    assert "getReader()" in javascript


def _run_snippet(language: str, code: str, token: str, tmp_path) -> subprocess.CompletedProcess:
    if language == "curl":
        command = ["bash", "-c", code]
    elif language == "python":
        command = [sys.executable, "-c", code]
    else:
        path = tmp_path / "request.mjs"
        path.write_text(code)
        command = [NODE, str(path)]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=30,
        env={"RTDASH_TOKEN": token, "PATH": "/usr/bin:/bin"},
        check=False,
    )


def _recorded_run() -> Run:
    """The one run, once recorded: a streamed run is finished just after its last byte."""
    deadline = time.monotonic() + 10
    while (run := Run.objects.get()).status == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    return run


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    "language", ["curl", "python", pytest.param("javascript", marks=needs_node)]
)
def test_each_snippet_runs_against_rtdash(
    upstream, acme_key, acme_token, language, stream, tmp_path
):
    _token, plaintext = acme_token
    body = {"agent": "support-chat", "prompt": "Sample", "stream": stream}
    with RtdashServer(upstream.url, TEST_ENCRYPTION_KEY) as server:
        snippets = request_snippets(body, f"{server.url}/v1/run")
        result = _run_snippet(language, getattr(snippets, language), plaintext, tmp_path)
        assert result.returncode == 0, result.stderr
        run = _recorded_run()
    assert run.source == "gateway" and run.status == "completed"
    assert run.prompt == "Sample" and run.stream is stream
    if stream:
        assert "run_completed" in result.stdout
    elif language == "curl":
        assert json.loads(result.stdout)["data"]["result"] == run.result
    else:
        assert result.stdout.strip() == run.result
