"""Writing the append-only audit log."""

from __future__ import annotations

from django.http import HttpRequest

from runs.models import AuditEvent, Team


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
    if actor is None and request is not None and request.user.is_authenticated:
        actor = request.user
    return AuditEvent.objects.create(
        team=team,
        actor=actor,
        actor_label=actor_label or (actor.get_username() if actor else ""),
        action=action,
        target=target[:200],
        ip=client_ip(request),
    )
