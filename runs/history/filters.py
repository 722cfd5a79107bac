"""The runs list's filters and its keyset pagination, shared by the page and the exports.

Filters come from the query string so a filtered list is a URL: shareable, bookmarkable, and
the back button works. Pages continue *before* the last row shown, on (started_at, id), so
page 2,000 costs what page 1 costs; there is never an OFFSET.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from urllib.parse import urlencode

from django import forms
from django.db.models import Q, QuerySet, Sum, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import QueryDict

from runs.core.access import for_team
from runs.core.days import day_field, day_start, instant_from_micros, local_day
from runs.models import DailyUsage, GatewayToken, Membership, Run, RunStatus, Source, Team

PAGE_SIZE = 50
# How many runs one request may read row by row for a text or metadata filter: the row, not
# the LIKE or the JSON, is most of the cost, so bounding the rows bounds the request at any
# history size; the page then offers to search further back (figures: docs/performance.md).
SCAN_BUDGET = 50_000
FILTER_NAMES = ("agent", "status", "who", "source", "since", "until", "thread", "meta", "q")


def team_agents(team: Team) -> list[str]:
    """Agents the team has run, read from the daily rollup (small) rather than the runs.

    Every finished run is in the rollup, so only an agent whose first run is still going is
    missing, until it ends.
    """
    return sorted(set(for_team(DailyUsage, team).values_list("agent", flat=True).distinct()))


def who_choices(team: Team) -> list[tuple[str, str]]:
    members = (
        for_team(Membership, team).select_related("user").order_by("user__username").only("user")
    )
    tokens = for_team(GatewayToken, team).order_by("name", "pk")
    return [
        *((f"user:{m.user_id}", m.user.get_username()) for m in members),
        *((f"token:{t.pk}", f"token {t.name} ({t.prefix}…)") for t in tokens),
    ]


class RunFilterForm(forms.Form):
    agent = forms.CharField(required=False, max_length=200)
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *RunStatus.choices])
    who = forms.ChoiceField(required=False)
    source = forms.ChoiceField(required=False, choices=[("", "Any source"), *Source.choices])
    since = day_field(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = day_field(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    thread = forms.CharField(required=False, max_length=200)
    meta = forms.CharField(
        required=False,
        max_length=300,
        widget=forms.TextInput(attrs={"placeholder": "key=value"}),
    )
    q = forms.CharField(
        required=False,
        max_length=200,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Text in prompt or result"}),
    )

    def __init__(self, data: QueryDict, *, team: Team) -> None:
        # Only the filter names: the cursor and anything else in the URL is not a filter.
        super().__init__({name: data.get(name, "") for name in FILTER_NAMES})
        self.team = team
        self.fields["who"].choices = [("", "Anyone"), *who_choices(team)]
        self.agents = team_agents(team)

    def clean_meta(self) -> tuple[str, str] | None:
        raw = self.cleaned_data["meta"].strip()
        if not raw:
            return None
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            raise forms.ValidationError("Write the metadata filter as key=value.")
        return key.strip(), value.strip()

    def clean(self) -> dict:
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            self.add_error("until", "The end date is before the start date.")
        return cleaned

    def filters(self) -> RunFilters:
        """The valid filters; an invalid field is reported on the form and not applied."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        return RunFilters(
            agent=data.get("agent", "").strip(),
            status=data.get("status", ""),
            who=data.get("who", ""),
            source=data.get("source", ""),
            since=data.get("since"),
            until=data.get("until"),
            thread=data.get("thread", "").strip(),
            meta=data.get("meta"),
            q=data.get("q", "").strip(),
            zone=self.team.zone,
        )


@dataclass(frozen=True)
class RunFilters:
    agent: str = ""
    status: str = ""
    who: str = ""
    source: str = ""
    since: object = None  # date
    until: object = None  # date
    thread: str = ""
    meta: tuple[str, str] | None = None
    q: str = ""
    zone: tzinfo = UTC  # since and until are days of the team's time zone, as in reports

    @property
    def active(self) -> bool:
        return any(getattr(self, name) for name in FILTER_NAMES)

    @property
    def reads_rows(self) -> bool:
        """Text and metadata cannot be indexed portably: the database reads each run."""
        return bool(self.q or self.meta)

    def query_string(self) -> str:
        """These filters as a URL query, for links that keep them (pages, exports)."""
        values = {
            "agent": self.agent,
            "status": self.status,
            "who": self.who,
            "source": self.source,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "thread": self.thread,
            "meta": "=".join(self.meta) if self.meta else "",
            "q": self.q,
        }
        return urlencode({name: value for name, value in values.items() if value})

    def apply(self, runs: QuerySet[Run]) -> QuerySet[Run]:
        if self.agent:
            runs = runs.filter(agent=self.agent)
        if self.status:
            runs = runs.filter(status=self.status)
        if self.who:
            who = parse_who(self.who)
            runs = runs.none() if who is None else runs.filter(**{f"{who[0]}_id": who[1]})
        if self.source:
            runs = runs.filter(source=self.source)
        if self.since:
            runs = runs.filter(started_at__gte=day_start(self.since, self.zone))
        if self.until:
            # The next day's start, not 24 hours on: a local day has 23 or 25 across DST.
            runs = runs.filter(started_at__lt=day_start(self.until + timedelta(days=1), self.zone))
        if self.thread:
            runs = runs.filter(upstream_thread_id=self.thread)
        if self.meta:
            runs = _with_metadata(runs, *self.meta)
        if self.q:
            # Runs sent with `messages` have no prompt: their text is searched in the JSON.
            runs = runs.alias(messages_text=Cast("messages", TextField())).filter(
                Q(prompt__icontains=self.q)
                | Q(result__icontains=self.q)
                | Q(messages__isnull=False, messages_text__icontains=self.q)
            )
        return runs


WHO_KINDS = ("user", "token")
# Longer than any primary key, short enough that int() never meets a huge string.
WHO_PK_DIGITS = 18


def parse_who(value: str) -> tuple[str, int] | None:
    """`user:<pk>` or `token:<pk>` as (kind, pk); None for anything else.

    The form only accepts the team's own choices, but RunFilters can be built in code, and
    the kind becomes part of a lookup name: only the two known kinds and plain ASCII digits
    pass (int() alone raises on `²` or thousands of digits, and takes ` 1` or `1_0`).
    """
    kind, _, pk = value.partition(":")
    if kind not in WHO_KINDS or not (pk.isascii() and pk.isdigit()) or len(pk) > WHO_PK_DIGITS:
        return None
    return kind, int(pk)


def _with_metadata(runs: QuerySet[Run], key: str, value: str) -> QuerySet[Run]:
    """Runs whose top-level metadata `key` equals `value`, compared as text.

    The key reaches the database as a parameter of a JSON path (KeyTextTransform), never as
    part of a lookup name, so `a__contains` is only an odd key. Numbers, booleans and null
    compare in their JSON spelling: `attempt=3`, `debug=true`.
    """
    as_text = Cast(KeyTextTransform(key, "metadata"), TextField())
    return runs.alias(meta_value=as_text).filter(meta_value=value)


# --- Keyset pagination ------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """A position in the newest-first list: the last row of the previous page."""

    started_at: datetime
    pk: int

    def encode(self) -> str:
        micros = round(self.started_at.timestamp() * 1_000_000)
        return f"{micros}.{self.pk}"

    @classmethod
    def decode(cls, raw: str | None) -> Cursor | None:
        """None for a missing or malformed cursor (the list then starts at the newest run)."""
        if not raw:
            return None
        micros, _, pk = raw.partition(".")
        started_at = instant_from_micros(micros)
        if started_at is None or not pk.isascii() or not pk.isdigit() or len(pk) > 19:
            return None
        return cls(started_at, int(pk))

    def after(self, runs: QuerySet[Run]) -> QuerySet[Run]:
        # The plain `started_at <= t` bound is redundant with the OR but lets the database
        # seek into the (team, started_at, id) index instead of scanning from the newest row.
        return runs.filter(started_at__lte=self.started_at).filter(
            Q(started_at__lt=self.started_at) | Q(started_at=self.started_at, pk__lt=self.pk)
        )


NEWEST_FIRST = ("-started_at", "-id")


def scan_floor(team: Team, before: datetime | None, since=None) -> datetime | None:
    """The start of the oldest day a row-reading search may reach in one request.

    Counted from the daily rollup (a few thousand small rows, not the runs): walking back from
    the day of `before` (where the page starts), the first day at which SCAN_BUDGET runs are
    reached. None when the whole remaining history (or everything after `since`) fits in the
    budget. Threads use it too: a team has fewer threads than runs.
    """
    days = for_team(DailyUsage, team)
    if before is not None:
        days = days.filter(day__lte=local_day(before, team.zone))
    if since is not None:
        days = days.filter(day__gte=since)
    counted = 0
    floor = None
    for day, runs in days.values_list("day").annotate(n=Sum("runs")).order_by("-day"):
        if floor is not None:
            return floor  # there is history before the floor: the search stops there
        counted += runs
        if counted >= SCAN_BUDGET:
            floor = day_start(day, team.zone)
    return None


@dataclass
class Page:
    runs: list[Run]
    next_cursor: str | None
    # Set when a text or metadata search stopped at its budget: runs before this were not
    # searched, and next_cursor continues the search from there.
    searched_back_to: datetime | None = None


def page_of(
    runs: QuerySet[Run],
    cursor: Cursor | None,
    *,
    floor: datetime | None = None,
    size: int = PAGE_SIZE,
) -> Page:
    if cursor is not None:
        runs = cursor.after(runs)
    if floor is not None:
        runs = runs.filter(started_at__gte=floor)
    rows = list(runs.order_by(*NEWEST_FIRST)[: size + 1])
    if len(rows) > size:
        rows = rows[:size]
        return Page(rows, Cursor(rows[-1].started_at, rows[-1].pk).encode())
    if floor is not None:
        # Fewer matches than a page in the budget: offer to go on before the floor.
        return Page(rows, Cursor(floor, 0).encode(), searched_back_to=floor)
    return Page(rows, None)
