"""Changing a team's time zone: the field, the audit event, and the rollups rebuilt on the new
days. Shared by the settings page and `manage.py team set-timezone`."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest

from runs.core.audit import record
from runs.core.days import validate_timezone_name
from runs.models import Team
from runs.pipeline.recording import rebuild_usage
from runs.pipeline.stats import rebuild_run_stats


def change_timezone(
    team: Team, name: str, *, request: HttpRequest | None = None, actor_label: str = ""
) -> bool:
    """Give `team` the zone `name` and rebuild its daily rollups; False when it had it already.

    Raises django's ValidationError for a name that is not a zone. The zone is saved (and
    audited) in its own short transaction first, so every run that finishes afterwards counts
    on the new days; the rollups are then rebuilt from the runs in a second one. A run whose
    finish read the old zone in the instant between the two could still land on its old day;
    `manage.py rebuild_usage --team` puts it right. ThreadUsage is not rebuilt: it holds each
    thread's first and last instants, not days, so no zone changes it.
    """
    validate_timezone_name(name)
    with transaction.atomic():
        locked = Team.objects.select_for_update().get(pk=team.pk)
        old = locked.timezone
        if old == name:
            team.timezone = name
            return False
        locked.timezone = name
        locked.save(update_fields=["timezone"])
        record(
            request, "timezone_changed", locked, target=f"{old} → {name}", actor_label=actor_label
        )
    team.timezone = name
    with transaction.atomic():
        rebuild_usage(team)
        rebuild_run_stats(team)
    return True
