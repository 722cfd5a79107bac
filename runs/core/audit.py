"""Writing and reading the append-only audit log."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.http import HttpRequest

from runs.models import AuditEvent, Membership, Team

# What each action means, for the audit page. Actions not listed show as they are stored.
ACTIONS: dict[str, str] = {
    "login": "Logged in",
    "logout": "Logged out",
    "login_failed": "Failed login",
    "login_throttled": "Login refused (too many failures)",
    "access_denied": "Access denied",
    "team_created": "Team created",
    "timezone_changed": "Time zone changed",
    "member_added": "Member added",
    "member_role_changed": "Role changed",
    "member_removed": "Member removed",
    "key_added": "Key added",
    "key_tested": "Key tested",
    "key_default_set": "Default key set",
    "key_revoked": "Key revoked",
    "key_rotated": "Key re-encrypted",
    "token_issued": "Token issued",
    "token_revoked": "Token revoked",
    "runs_exported": "Runs exported",
    "thread_renamed": "Thread renamed",
    "thread_archived": "Thread archived",
    "thread_unarchived": "Thread unarchived",
    "thread_deleted": "Thread deleted",
    "budget_warning": "Budget warning",
    "budget_exceeded": "Budget exceeded",
    "price_set": "Price set",
    "price_deleted": "Price deleted",
    "budget_set": "Budget set",
    "budget_deleted": "Budget deleted",
}

# Events about an account rather than a team: they are stored without a team, and a team's
# log shows those of its current members.
ACCOUNT_ACTIONS = ("login", "logout", "login_failed", "login_throttled")


def client_ip(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def record(
    request: HttpRequest | None,
    action: str,
    team: Team | None,
    *,
    target: str = "",
    actor=None,
    actor_label: str = "",
) -> AuditEvent:
    """Append an audit event. `target` must describe, never contain, a secret."""
    if actor is None and request is not None:
        # Not every request has a user: django.contrib.auth's login() may run on a bare one.
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            actor = user
    return AuditEvent.objects.create(
        team=team,
        actor=actor,
        actor_label=(actor_label or (actor.get_username() if actor else ""))[:150],
        action=action,
        target=target[:200],
        ip=client_ip(request),
    )


def team_log(team: Team) -> QuerySet[AuditEvent]:
    """A team's events plus the account events (logins) of its current members, newest first."""
    usernames = Membership.objects.filter(team=team).values("user__username")
    return AuditEvent.objects.filter(
        Q(team=team) | Q(team__isnull=True, action__in=ACCOUNT_ACTIONS, actor_label__in=usernames)
    ).order_by("-created_at", "-id")
