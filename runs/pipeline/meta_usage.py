"""Spend by a metadata key: the rollup behind `group_by=meta:<key>` (DailyMetaUsage).

A run's metadata is free-form, so the rollup is bounded three ways (runs.models.usage): only the
first META_KEYS_PER_TEAM keys a team's runs carry are tracked (MetaKey, claimed by slot so the
bound holds under concurrent finishes), a value counts by its first META_VALUE_LENGTH
characters, and a key keeps at most META_VALUES_PER_DAY values a day, the rest adding up under
"(other)". Only text, numbers and booleans are values; a run whose value is anything else (an
object, a list, null) counts as not having the key, so it falls in the report's "(none)" row
with the runs that lack it.

`record_meta_usage` runs in finish_run's transaction, beside record_usage; `rebuild_meta_usage`
rebuilds a team's rows from its runs (called by runs.pipeline.recording.rebuild_usage, so every
rebuild of the rollups includes it) with the same rules.
"""

from __future__ import annotations

import functools
import json
import re
from collections import defaultdict
from datetime import date
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from runs.core import sql as fastsql
from runs.core.days import day_start, local_day, run_day
from runs.models import FINISHED_STATUSES, CostStatus, Run, RunStatus, Team
from runs.models.usage import (
    META_KEY_LENGTH,
    META_KEYS_PER_TEAM,
    META_VALUE_LENGTH,
    META_VALUES_PER_DAY,
    OTHER_META_VALUE,
    DailyMetaUsage,
    MetaKey,
)

# What a key may look like, in metadata and in `group_by=meta:<key>`.
META_KEY_PATTERN = re.compile(rf"[A-Za-z0-9_.-]{{1,{META_KEY_LENGTH}}}")
META_COUNTERS = (
    "runs", "completed", "failed", "input_tokens", "output_tokens", "cached_input_tokens",
    "reasoning_tokens", "cost", "unpriced_runs", "partial_runs", "duration_ms",
)  # fmt: skip


def meta_value(value: Any) -> str | None:
    """A metadata value as the rollup keeps it; None for one it does not group by."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = json.dumps(value)
    elif isinstance(value, str):
        text = value
    else:
        return None
    return text[:META_VALUE_LENGTH]


def meta_values(metadata: Any) -> dict[str, str]:
    """The run's groupable metadata: {key: value} for well-formed keys with scalar values."""
    if not isinstance(metadata, dict):
        return {}
    values = {}
    for key, value in metadata.items():
        if isinstance(key, str) and META_KEY_PATTERN.fullmatch(key):
            text = meta_value(value)
            if text is not None:
                values[key] = text
    return values


def tracked_keys(team: Team | int) -> list[str]:
    """The keys the team's reports can group by, in the order runs first carried them."""
    team_id = team.pk if isinstance(team, Team) else team
    quote = connection.ops.quote_name
    sql = (
        f"SELECT {quote('key')} FROM {quote(MetaKey._meta.db_table)} "  # noqa: S608 - names from the model, the value bound
        "WHERE team_id = %s ORDER BY slot"
    )
    with connection.cursor() as cursor:  # on every finish of a run with metadata: no ORM
        cursor.execute(sql, [team_id])
        return [key for (key,) in cursor.fetchall()]


def _claim_keys(team_id: int, wanted: list[str], known: list[str]) -> set[str]:
    """Track as many of `wanted` (not yet tracked) as the bound allows; returns those now
    tracked. A slot taken by a concurrent finish is retried with the next one."""
    claimed: set[str] = set()
    slot = len(known)
    for key in wanted:
        while slot < META_KEYS_PER_TEAM:
            try:
                with transaction.atomic():
                    MetaKey.objects.create(
                        team_id=team_id, key=key, slot=slot, first_seen=timezone.now()
                    )
            except IntegrityError:
                # The key or the slot was taken meanwhile: re-read the team's keys.
                current = tracked_keys(team_id)
                slot = len(current)
                if key in current:
                    claimed.add(key)
                    break
                continue
            claimed.add(key)
            slot += 1
            break
    return claimed


def _counters(run: Run, sign: int = 1) -> dict[str, Any]:
    return {
        "runs": sign,
        "completed": sign * int(run.status == RunStatus.COMPLETED),
        "failed": sign * int(run.status in (RunStatus.FAILED, RunStatus.INTERRUPTED)),
        "input_tokens": sign * (run.input_tokens or 0),
        "output_tokens": sign * (run.output_tokens or 0),
        "cached_input_tokens": sign * (run.cached_input_tokens or 0),
        "reasoning_tokens": sign * (run.reasoning_tokens or 0),
        "cost": sign * (run.cost or 0),
        "unpriced_runs": sign * int(run.cost is None),
        "partial_runs": sign * int(run.cost_status == CostStatus.PARTIAL),
        "duration_ms": sign * (run.duration_ms or 0),
    }


def record_meta_usage(run: Run) -> None:
    """Add a finished run to the metadata rollup (in finish_run's transaction). No query at
    all for a run without metadata; one for its team's keys, then one or two per tracked key
    it carries."""
    values = meta_values(run.metadata)
    if not values:
        return
    known = tracked_keys(run.team_id)
    keys = [key for key in values if key in known]
    new = [key for key in values if key not in known]
    if new and len(known) < META_KEYS_PER_TEAM:
        keys += sorted(_claim_keys(run.team_id, new, known))
    day = run_day(run)  # in the team's time zone, as record_usage counts it
    for key in keys:
        _add(run.team_id, day, key, values[key], _counters(run))


def uncount_meta_usage(run: Run) -> None:
    """Remove what a run's first finish added (a followed run finished again, see
    runs.pipeline.follow): `run` as it was then."""
    values = meta_values(run.metadata)
    if not values:
        return
    day = run_day(run)
    rows = DailyMetaUsage.objects.filter(team_id=run.team_id, day=day)
    for key, value in values.items():
        found = rows.filter(key=key, value__in=[value, OTHER_META_VALUE]).order_by("-value")
        # Its own value's row if it has one, else "(other)" ("(" sorts before letters).
        pk = found.filter(value=value).values_list("pk", flat=True).first() or (
            found.values_list("pk", flat=True).first()
        )
        if pk is not None:
            fastsql.add_to_row(DailyMetaUsage, pk, added=_counters(run, -1), replaced={})


@functools.cache
def _add_sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    sets = ", ".join(f"{quote(name)} = {quote(name)} + %s" for name in META_COUNTERS)
    return (
        f"UPDATE {quote(DailyMetaUsage._meta.db_table)} SET {sets} "  # noqa: S608 - names from the model, values bound
        f"WHERE team_id = %s AND {quote('key')} = %s AND day = %s AND value = %s"
    )


def _add(team_id: int, day: date, key: str, value: str, counters: dict) -> None:
    """Add to the (team, key, day, value) row; a value new that day takes a place among the
    key's META_VALUES_PER_DAY (or adds to "(other)"), with the key's MetaKey row locked so
    two new values cannot both take the last place."""
    # The usual case, a value already seen that day: one prepared UPDATE (the ORM's select
    # then update cost several times more, on every finished run that carries metadata).
    where = [team_id, key, connection.ops.adapt_datefield_value(day), value]
    with connection.cursor() as cursor:
        added = [counters[name] for name in META_COUNTERS]
        cursor.execute(_add_sql(connection.vendor), [*added, *where])
        if cursor.rowcount:
            return
    rows = DailyMetaUsage.objects.filter(team_id=team_id, key=key, day=day)
    list(MetaKey.objects.select_for_update().filter(team_id=team_id, key=key))
    if rows.exclude(value=OTHER_META_VALUE).count() >= META_VALUES_PER_DAY:
        value = OTHER_META_VALUE
    row = DailyMetaUsage(team_id=team_id, day=day, key=key, value=value, **counters)
    fastsql.upsert_adding(row, key=("team", "key", "day", "value"), added=META_COUNTERS)


def rebuild_meta_usage(team: Team | None = None, since: date | None = None) -> int:
    """Rebuild the metadata rollup of `team` (or every team) from `since` on; returns the runs
    counted. Keys its runs carry that are not tracked yet are claimed, in the order of the runs,
    as record_meta_usage would have."""
    if team is None:
        return sum(rebuild_meta_usage(one, since) for one in Team.objects.all())
    runs = Run.objects.filter(team=team, status__in=FINISHED_STATUSES).exclude(metadata={})
    rows = DailyMetaUsage.objects.filter(team=team)
    zone = team.zone
    if since is not None:
        runs = runs.filter(started_at__gte=day_start(since, zone))
        rows = rows.filter(day__gte=since)
    known = tracked_keys(team)
    sums: dict[tuple, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(META_COUNTERS, 0))
    per_day: dict[tuple, set[str]] = defaultdict(set)
    counted = 0
    columns = (
        "started_at", "metadata", "status", "input_tokens", "output_tokens",
        "cached_input_tokens", "reasoning_tokens", "cost", "cost_status", "duration_ms",
    )  # fmt: skip
    for values in runs.order_by("started_at", "pk").values(*columns).iterator(chunk_size=5000):
        carried = meta_values(values["metadata"])
        if not carried:
            continue
        new = [key for key in carried if key not in known]
        if new and len(known) < META_KEYS_PER_TEAM:
            known = known + sorted(_claim_keys(team.pk, new, known))
        run = Run(**values)
        counters = _counters(run)
        day = local_day(values["started_at"], zone)
        counted += 1
        for key, value in carried.items():
            if key not in known:
                continue
            seen = per_day[key, day]
            if value not in seen and len(seen) >= META_VALUES_PER_DAY:
                value = OTHER_META_VALUE
            else:
                seen.add(value)
            total = sums[key, day, value]
            for name, amount in counters.items():
                total[name] += amount
    new_rows = [
        DailyMetaUsage(team=team, day=day, key=key, value=value, **total)
        for (key, day, value), total in sums.items()
    ]
    with transaction.atomic():
        rows.delete()
        DailyMetaUsage.objects.bulk_create(new_rows, batch_size=2000)
    return counted
