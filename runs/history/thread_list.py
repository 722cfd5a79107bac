"""The threads list: rtdash's thread records merged with RunTools' list, newest activity
first, keyset-paged on both; each recorded row with its latest run, first prompt, tokens and
cost, read in a fixed number of queries whatever the page's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, Substr

from runs.core.access import for_team
from runs.core.days import instant_from_micros
from runs.history.filters import scan_floor
from runs.history.threads import THREAD_PAGE_SIZE, UpstreamThread, upstream_threads
from runs.models import Run, Team, Thread


@dataclass
class ThreadRow:
    """One line of the threads list, from rtdash's record, the upstream's, or both."""

    upstream_id: str
    agent: str
    title: str
    archived: bool
    last_activity: datetime | None
    recorded: bool  # rtdash has a Thread row for it
    listed_upstream: bool
    turns: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: Decimal | None = None
    unpriced_runs: int = 0
    # From the thread's runs: how it began (to tell apart threads with the same title) and
    # when its latest run last did something.
    first_prompt: str = ""
    first_run_at: datetime | None = None
    last_run_at: datetime | None = None

    @property
    def shown_activity(self) -> datetime | None:
        """The latest run's end (or start, while it runs); the thread's own stamp without runs."""
        return self.last_run_at or self.last_activity

    @property
    def sort_key(self) -> tuple[datetime, str]:
        return (self.last_activity or datetime.min.replace(tzinfo=UTC), self.upstream_id)


@dataclass(frozen=True)
class ThreadCursor:
    """The last row shown, on (last activity, upstream id), newest first."""

    at: datetime
    upstream_id: str

    def encode(self) -> str:
        return f"{round(self.at.timestamp() * 1_000_000)}.{self.upstream_id}"

    @classmethod
    def decode(cls, raw: str | None) -> ThreadCursor | None:
        if not raw:
            return None
        micros, _, upstream_id = raw.partition(".")
        at = instant_from_micros(micros)
        # No stored id holds a NUL (nor can PostgreSQL compare one).
        return None if at is None or "\x00" in upstream_id else cls(at, upstream_id)

    def before(self, key: tuple[datetime, str]) -> bool:
        return key < (self.at, self.upstream_id)


@dataclass
class ThreadPage:
    rows: list[ThreadRow]
    next_cursor: str | None
    problems: list[str]
    # A title search reads each thread, so like the runs list's text filter it stops at a
    # budget; set when it did, and next_cursor then continues before this time.
    searched_back_to: datetime | None = None


SHOW_CHOICES = {"active": False, "archived": True, "all": None}


def thread_page(
    team: Team,
    *,
    search: str = "",
    show: str = "active",
    cursor: ThreadCursor | None = None,
    agents: list[str],
    size: int = THREAD_PAGE_SIZE,
) -> ThreadPage:
    """A page of the merged list, newest activity first, keyset-paged on both sources."""
    archived = SHOW_CHOICES.get(show, False)
    listed = upstream_threads(team, agents)
    by_id = {thread.id: thread for thread in listed.threads}

    local = for_team(Thread, team).filter(deleted_at__isnull=True)
    if archived is not None:
        local = local.filter(archived=archived)
    floor = None
    if search:
        local = local.filter(title__icontains=search)
        floor = scan_floor(team, cursor.at if cursor else None)
        if floor is not None:
            local = local.filter(last_activity_at__gte=floor)
    if cursor is not None:
        local = local.filter(last_activity_at__lte=cursor.at).filter(
            Q(last_activity_at__lt=cursor.at)
            | Q(last_activity_at=cursor.at, upstream_id__lt=cursor.upstream_id)
        )
    # Title and archived state are shown as the upstream has them when it lists the thread
    # (they can be changed outside rtdash); the filtering uses rtdash's record.
    local_rows = [
        _local_row(thread, by_id.get(thread.upstream_id))
        for thread in _with_run_facts(local).order_by("-last_activity_at", "-upstream_id")[
            : size + 1
        ]
    ]

    known = set(
        for_team(Thread, team)
        .filter(upstream_id__in=list(by_id))
        .values_list("upstream_id", flat=True)
    )
    outside = [
        ThreadRow(
            upstream_id=thread.id,
            agent=thread.agent,
            title=thread.title,
            archived=thread.archived,
            last_activity=thread.updated_at,
            recorded=False,
            listed_upstream=True,
        )
        for thread in listed.threads
        if thread.id not in known
        and (archived is None or thread.archived is archived)
        and (not search or search.lower() in thread.title.lower())
    ]
    if cursor is not None:
        outside = [row for row in outside if cursor.before(row.sort_key)]
    if floor is not None:
        # The same window as rtdash's records, so the next page neither repeats nor skips.
        outside = [row for row in outside if row.last_activity and row.last_activity >= floor]
    merged = sorted([*local_rows, *outside], key=lambda row: row.sort_key, reverse=True)
    more = len(merged) > size
    rows = merged[:size]
    _add_costs(team, rows)
    if more and rows and rows[-1].last_activity is not None:
        next_cursor = ThreadCursor(rows[-1].last_activity, rows[-1].upstream_id).encode()
        return ThreadPage(rows, next_cursor, listed.problems)
    if floor is not None:
        return ThreadPage(
            rows, ThreadCursor(floor, "").encode(), listed.problems, searched_back_to=floor
        )
    return ThreadPage(rows, None, listed.problems)


FIRST_PROMPT_CHARS = 160


def _with_run_facts(threads: QuerySet[Thread]) -> QuerySet[Thread]:
    """Each thread with its first prompt and first and latest run times, in the same query:
    subqueries on the runs' (team, upstream thread, started_at) index, one row each."""
    runs = Run.objects.filter(
        team_id=OuterRef("team_id"), upstream_thread_id=OuterRef("upstream_id")
    )
    first = runs.order_by("started_at", "pk")
    latest = runs.order_by("-started_at", "-pk")
    return threads.annotate(
        first_prompt=Subquery(first.values(head=Substr("prompt", 1, FIRST_PROMPT_CHARS))[:1]),
        first_run_at=Subquery(first.values("started_at")[:1]),
        last_run_at=Subquery(latest.values(at=Coalesce("finished_at", "started_at"))[:1]),
    )


def _local_row(thread: Thread, listed: UpstreamThread | None) -> ThreadRow:
    return ThreadRow(
        upstream_id=thread.upstream_id,
        agent=thread.agent,
        title=(listed.title if listed and listed.title else thread.title),
        archived=listed.archived if listed else thread.archived,
        last_activity=thread.last_activity_at,
        recorded=True,
        listed_upstream=listed is not None,
        turns=thread.turns,
        input_tokens=thread.input_tokens,
        output_tokens=thread.output_tokens,
        first_prompt=getattr(thread, "first_prompt", None) or "",
        first_run_at=getattr(thread, "first_run_at", None) or thread.created_at,
        last_run_at=getattr(thread, "last_run_at", None),
    )


def _add_costs(team: Team, rows: list[ThreadRow]) -> None:
    """Each recorded thread's cost: the sum of its runs' costs, and how many had none."""
    ids = [row.upstream_id for row in rows if row.recorded]
    if not ids:
        return
    sums = (
        for_team(Run, team)
        .filter(upstream_thread_id__in=ids)
        .values("upstream_thread_id")
        .annotate(total_cost=Sum("cost"), unpriced=Count("pk", filter=Q(cost__isnull=True)))
        .order_by()
    )
    by_id = {item["upstream_thread_id"]: item for item in sums}
    for row in rows:
        if row.upstream_id in by_id:
            row.cost = by_id[row.upstream_id]["total_cost"]
            row.unpriced_runs = by_id[row.upstream_id]["unpriced"]
