"""A team's days: dates in the team's own time zone, and the instants where they begin.

Every place rtdash cuts time into days — the daily rollups, report periods, budgets' months,
prices' effective dates, the charts — counts a run on the date it started in its team's zone
(Team.timezone, an IANA name, UTC by default). A local day is not always 24 hours: across a
daylight-saving change it is 23 or 25, which is why periods are bounded by `day_start` and
never by adding hours to a UTC midnight.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.utils import timezone

DEFAULT_TIMEZONE = "UTC"
# The days rtdash takes from a person (a filter, a report's period) or a cursor: far wider
# than any run's, and far enough from the calendar's ends (years 1 and 9999) that a day's
# neighbours, the period of the same length before it and its start in any time zone all
# exist. Nearer the ends, that date arithmetic raises OverflowError.
FIRST_DAY = date(1900, 1, 1)
LAST_DAY = date(9000, 12, 31)
# Names the tz database ships that are not places: "Factory" has no offset anyone lives by.
_NOT_ZONES = {"Factory", "localtime", "posixrules"}


@functools.cache
def timezone_names() -> tuple[str, ...]:
    """The zones a team may choose, UTC first, then alphabetically."""
    names = sorted(available_timezones() - _NOT_ZONES - {DEFAULT_TIMEZONE})
    return (DEFAULT_TIMEZONE, *names)


@functools.cache
def _known_names() -> frozenset[str]:
    return frozenset(timezone_names())


def validate_timezone_name(name: str) -> None:
    """Refuse anything but a zone of the tz database, by its exact name.

    Checked against the list rather than by trying ZoneInfo(name), which also reads paths
    ("../etc/…" is refused by it, but a list leaves nothing to reason about).
    """
    if not isinstance(name, str) or name not in _known_names():
        raise ValidationError(
            "Choose a time zone by its IANA name, such as Europe/Berlin or UTC.",
            code="invalid_timezone",
        )


@functools.lru_cache(maxsize=1024)
def zone_named(name: str) -> tzinfo:
    """The zone of a stored name; UTC for a name this machine's tz data does not know (a zone
    valid when it was saved, since renamed or dropped)."""
    if name == DEFAULT_TIMEZONE or not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def day_field(**kwargs) -> forms.DateField:
    """A form's date, from FIRST_DAY to LAST_DAY; outside them, a form error that says so."""
    return forms.DateField(
        validators=[MinValueValidator(FIRST_DAY), MaxValueValidator(LAST_DAY)], **kwargs
    )


def in_calendar(day: date) -> bool:
    """Whether rtdash takes the day (see FIRST_DAY)."""
    return FIRST_DAY <= day <= LAST_DAY


def instant_from_micros(micros: str) -> datetime | None:
    """The UTC instant a cursor names in microseconds since the epoch; None for anything else
    (not a number, 5,000 digits) or a day rtdash does not take."""
    try:
        moment = datetime.fromtimestamp(int(micros) / 1_000_000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return moment if in_calendar(moment.date()) else None


def local_day(moment: datetime, zone: tzinfo) -> date:
    """The date of an aware instant in `zone`."""
    return moment.astimezone(zone).date()


def local_today(zone: tzinfo) -> date:
    return local_day(timezone.now(), zone)


def day_start(day: date, zone: tzinfo) -> datetime:
    """The first instant of `day` in `zone`, in UTC.

    Where a daylight-saving change skips midnight, the day begins at the change: zoneinfo
    reads the missing 00:00 with the offset in force before it, which is that instant.
    """
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


def team_zone(team_id: int) -> tzinfo:
    """A team's zone by id: one small query, for the paths that have no Team row at hand."""
    from runs.models import Team

    name = Team.objects.filter(pk=team_id).values_list("timezone", flat=True).first()
    return zone_named(name or DEFAULT_TIMEZONE)


def run_day(run) -> date:
    """The day a run counts on: the date it started in its team's zone.

    The finish step reads the zone with the run (runs.core.sql.run_for_update sets
    `team_timezone`), so finishing a run costs no query for it; other callers pay one.
    """
    name = getattr(run, "team_timezone", None)
    zone = zone_named(name) if name is not None else team_zone(run.team_id)
    return local_day(run.started_at, zone)
