"""What the browser tests share: logging in through the login page, and the playground's page.

The browser itself is conftest's `browser` fixture (Debian's Chromium under Playwright).
"""

from __future__ import annotations

import json
import threading

from django.db import connections

from runs.models import Run
from tests.conftest import PASSWORD

TIMEOUT_MS = 20_000


def log_in(page, base_url: str, username: str = "alice"):
    """Log in through the login form, as a person would, and land on the overview."""
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}/")
    return page


def orm(function, *args):
    """Run ORM code in a thread of its own: Playwright's sync API keeps an event loop in this
    one, and Django refuses ORM calls next to it."""
    result = {}

    def target():
        try:
            result["value"] = function(*args)
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return result["value"]


def latest_run() -> Run | None:
    return Run.objects.order_by("-pk").first()


def open_playground(browser, live, username: str = "bob"):
    """A new tab, logged in as `username`, on the playground (reached by its link)."""
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, live.url, username)
    page.get_by_role("link", name="Playground").click()
    page.wait_for_url(f"{live.url}/playground")
    return page


def fill(page, agent: str, prompt: str, simulate: dict | None = None) -> None:
    page.get_by_label("Agent").fill(agent)
    page.get_by_label("Prompt").fill(prompt)
    if simulate is not None:
        page.get_by_text("Config and metadata").click()
        page.get_by_label("Metadata key").fill("simulate")
        page.get_by_label("Metadata value").fill(json.dumps(simulate))


def status(page):
    return page.locator("#statusbar [data-status]")


def answer_text(page) -> str:
    return "".join(page.locator("#output .answer").all_text_contents())


def wait_for_answer(page) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('#output .answer')].some(n => n.textContent.trim())"
    )


# Every page of a Watched context reports Content-Security-Policy violations.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportCspViolation(
    `${event.effectiveDirective} blocked ${event.blockedURI || "inline"} ` +
    `at ${event.sourceFile}:${event.lineNumber} on ${document.location.pathname}`
  );
});
"""


class Watched:
    """A browser context whose every page reports CSP violations and CSP console errors."""

    def __init__(self, browser) -> None:
        self.violations: list[str] = []
        self.context = browser.new_context()
        self.context.set_default_timeout(TIMEOUT_MS)
        self.context.expose_function("reportCspViolation", self._violation)
        self.context.add_init_script(REPORT_VIOLATIONS)
        self.page = self.context.new_page()
        self.page.on("console", self._console)

    def _violation(self, text: str) -> None:
        self.violations.append(text)

    def _console(self, message) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.violations.append(f"console: {message.text}")

    def visit(self, url: str) -> None:
        response = self.page.goto(url)
        assert response is not None and response.ok, url
        policy = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in policy and "style-src 'self'" in policy, url
        self.page.wait_for_load_state("load")

    def settle(self) -> None:
        # Violation events are queued tasks: give them a moment to arrive.
        self.page.wait_for_timeout(300)
