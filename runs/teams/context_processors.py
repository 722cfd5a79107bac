"""What every page's layout needs: the current team and role, and the main navigation."""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import reverse

from runs.models import Membership

# The main navigation, in the order it is shown.
NAV = [
    ("Playground", "playground"),
    ("Runs", "run_list"),
    ("Threads", "thread_list"),
    ("Reports", "reports"),
    ("Experiments", "experiment_list"),
    ("Settings", "team_settings"),
]


def _nav_items() -> list[dict[str, str]]:
    return [{"label": label, "url": reverse(name)} for label, name in NAV]


def team(request: HttpRequest) -> dict:
    """The current team and role for the layout (set by `team_view`)."""
    membership = getattr(request, "membership", None)
    team_count = 0
    if membership is not None:
        team_count = Membership.objects.filter(user_id=membership.user_id).count()
    return {
        "membership": membership,
        "team": getattr(membership, "team", None),
        "team_count": team_count,
        "nav_items": _nav_items() if membership else [],
    }
