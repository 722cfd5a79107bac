"""Reports by a metadata key (`group_by=meta:<key>`): one row per value of the key, "(none)"
for the runs without it.

Read from the DailyMetaUsage rollup (runs.pipeline.meta_usage), never the runs: the rows of
one key over the period, plus the period's DailyUsage totals, from which "(none)" is what the
values leave (exact: every run carrying a tracked key is in the rollup). Per-value percentiles,
iterations and maxTurns are not kept (histograms per value would multiply the rollup), so
those columns are blank for the rows and given for the totals only.
"""

from __future__ import annotations

from runs.core.exact_sums import read_sums, sums_of
from runs.models import Team
from runs.models.usage import META_KEY_LENGTH, OTHER_META_VALUE, DailyMetaUsage
from runs.pipeline.meta_usage import META_KEY_PATTERN, tracked_keys
from runs.reports.queries import (
    GROUPS,
    GroupRow,
    Period,
    Report,
    _rollup_rows,
    all_runs_row,
    spend_series,
    usage_report,
)

META_PREFIX = "meta:"
NONE_LABEL = "(none)"
META_USAGE_COLUMNS = (
    "value", "runs", "completed", "failed", "input_tokens", "output_tokens",
    "cached_input_tokens", "reasoning_tokens", "cost", "unpriced_runs", "partial_runs",
    "duration_ms",
)  # fmt: skip
_SUMMED = ("value", *(f"sum_{name}" for name in META_USAGE_COLUMNS[1:]))


class InvalidGroup(ValueError):
    pass


def group_choices(team: Team) -> dict[str, str]:
    """Every grouping the team's reports offer: the fixed ones, then its tracked metadata keys
    (bounded by META_KEYS_PER_TEAM)."""
    return {**GROUPS, **{f"{META_PREFIX}{key}": f"meta: {key}" for key in tracked_keys(team)}}


def check_group(team: Team, group_by: str) -> str:
    """`group_by` if the team's reports can group by it; raises InvalidGroup saying why not."""
    if group_by in GROUPS:
        return group_by
    if not group_by.startswith(META_PREFIX):
        raise InvalidGroup(f"group_by must be one of {', '.join(GROUPS)}, or meta:<key>.")
    key = group_by.removeprefix(META_PREFIX)
    if not META_KEY_PATTERN.fullmatch(key):
        raise InvalidGroup(
            f"A metadata key is 1 to {META_KEY_LENGTH} letters, digits, '_', '.' or '-'."
        )
    keys = tracked_keys(team)
    if key not in keys:
        offered = ", ".join(f"meta:{k}" for k in keys) or "none yet"
        raise InvalidGroup(f"No runs of this team carry metadata key {key!r} (keys: {offered}).")
    return group_by


def report_for(team: Team, period: Period, group_by: str) -> Report:
    """The report for a grouping already checked by check_group."""
    if group_by.startswith(META_PREFIX):
        return meta_usage_report(team, period, group_by.removeprefix(META_PREFIX))
    return usage_report(team, period, group_by)


def meta_usage_report(team: Team, period: Period, key: str) -> Report:
    """The report of `team` for `period` by the value of metadata `key`, biggest spend first."""
    usage, _stats, day_stats = _rollup_rows(team, period, by_group=False)
    totals = all_runs_row(usage, day_stats)
    totals.filters = _filters(period)
    # Summed per value in the database (a key can have hundreds of values a day, so a period
    # has thousands of rows): what comes back is one row per value.
    rows = (
        DailyMetaUsage.objects.filter(
            team=team, key=key, day__gte=period.since, day__lte=period.until
        )
        .values("value")
        .annotate(**sums_of(META_USAGE_COLUMNS[1:]))
        .values_list(*_SUMMED)
        .order_by()
    )
    sums = {value: read_sums(META_USAGE_COLUMNS[1:], numbers) for value, *numbers in rows}
    groups: dict[str | None, GroupRow] = {}
    for value, numbers in sums.items():
        group = groups[value] = _group(value, numbers)
        meta = f"{key}={value}" if value != OTHER_META_VALUE else ""
        group.filters = _filters(period, meta)
    carried = [sum(column) for column in zip(*sums.values(), strict=True)]
    none = _difference(totals, _group("", carried) if carried else GroupRow(key="", label=""))
    if none.runs:
        none.filters = _filters(period)
        groups[None] = none
    ranked = sorted(groups.values(), key=lambda g: (-g.cost, -g.runs, g.label))
    return Report(team, period, f"{META_PREFIX}{key}", ranked, totals, spend_series(usage, period))


def _group(value: str, numbers: list) -> GroupRow:
    row = dict(zip(META_USAGE_COLUMNS[1:], numbers, strict=True))
    group = GroupRow(key=value, label=value)
    group.add_usage(row)
    group.partial_runs = row["partial_runs"]
    return group


def _difference(totals: GroupRow, carried: GroupRow) -> GroupRow:
    """The runs without the key: every run of the period less those with a value."""
    none = GroupRow(key="", label=NONE_LABEL)
    for name in (
        "runs", "completed", "failed", "input_tokens", "output_tokens", "cached_input_tokens",
        "reasoning_tokens", "cost", "unpriced_runs", "partial_runs", "duration_ms_sum",
    ):  # fmt: skip
        setattr(none, name, getattr(totals, name) - getattr(carried, name))
    return none


def _filters(period: Period, meta: str = "") -> dict[str, str]:
    filters = {"since": period.since.isoformat(), "until": period.until.isoformat()}
    if meta:
        filters["meta"] = meta
    return filters
