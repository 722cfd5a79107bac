"""The template a history page answers with: the fragment htmx targets, else the whole page.

Every history page works without JavaScript. With htmx, the same URL answers with just the
fragment the request targets (a table, the next rows, a run's events), which the full page also
includes, so there is one template per fragment either way.
"""

from __future__ import annotations

from runs.core.access import TeamRequest


def template_for(request: TeamRequest, fragments: dict[str, str], page: str) -> str:
    """The fragment htmx targets (a key of `fragments`), else the whole page."""
    if request.htmx and not request.htmx.history_restore_request:
        return fragments.get(request.htmx.target or "", page)
    return page
