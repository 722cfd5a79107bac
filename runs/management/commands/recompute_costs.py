"""Re-price runs after a price change: `manage.py recompute_costs --since DATE [--team SLUG]`.

Every finished run that started on or after DATE (a day in the team's time zone) gets the
cost of the price in force on its start day in that zone, by the same rules as when it
finished (runs.pipeline.pricing), and the daily rollups from DATE on are rebuilt from the runs
so reports and budgets agree with them.
"""

from __future__ import annotations

import time
from datetime import date

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from runs.core.days import day_start
from runs.models import FINISHED_STATUSES, Run, Team
from runs.pipeline.pricing import PriceBook, Usage, cost_of
from runs.pipeline.recording import rebuild_usage
from runs.pipeline.stats import rebuild_run_stats, rebuild_thread_usage

BATCH = 5000


def parse_day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date: write it as YYYY-MM-DD.") from None


def teams_from(slug: str | None) -> list[Team]:
    if slug is None:
        return list(Team.objects.order_by("slug"))
    team = Team.objects.filter(slug=slug).first()
    if team is None:
        raise CommandError(f"No team {slug!r}.")
    return [team]


class Command(BaseCommand):
    help = "Re-price finished runs started on or after --since, and rebuild the rollups."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--since", required=True, help="First day (each team's own), YYYY-MM-DD."
        )
        parser.add_argument("--team", help="Only this team (slug). Default: every team.")

    def handle(self, *args, since: str, team: str | None, **options) -> None:
        first_day = parse_day(since)
        started = time.perf_counter()
        changed = seen = 0
        for one in teams_from(team):
            one_seen, one_changed = self._reprice(one, first_day)
            seen, changed = seen + one_seen, changed + one_changed
            rebuild_usage(one, first_day)
            rebuild_run_stats(one, first_day)
            rebuild_thread_usage(one)
        self.stdout.write(
            f"Re-priced {seen} runs since {first_day} ({changed} changed) and rebuilt the "
            f"rollups in {time.perf_counter() - started:.1f} s."
        )

    def _reprice(self, team: Team, first_day: date) -> tuple[int, int]:
        book, zone = PriceBook(team.pk), team.zone
        runs = Run.objects.filter(
            team=team,
            status__in=FINISHED_STATUSES,
            started_at__gte=day_start(first_day, zone),
        ).values_list(
            "pk", "agent", "started_at", "http_status", "input_tokens", "output_tokens",
            "cached_input_tokens", "reasoning_tokens", "cost", "cost_status",
        )  # fmt: skip
        seen, updates = 0, []
        field = Run._meta.get_field("cost")

        def adapt(cost):
            if cost is None:
                return None
            return connection.ops.adapt_decimalfield_value(
                cost, field.max_digits, field.decimal_places
            )

        for (pk, agent, started_at, http_status, input_tokens, output_tokens, cached, reasoning,
             old_cost, old_status) in runs.iterator(chunk_size=BATCH):  # fmt: skip
            seen += 1
            price = book.price_for(agent, started_at.astimezone(zone).date())
            usage = Usage(input_tokens, output_tokens, cached, reasoning)
            refused = http_status is not None and http_status >= 400
            cost, status = cost_of(usage, price, refused=refused)
            if cost != old_cost or status != old_status:
                updates.append((adapt(cost), status, pk))
        # One prepared UPDATE run many times: bulk_update builds a CASE WHEN per row, which
        # SQLite evaluates slowly on large batches.
        table = connection.ops.quote_name(Run._meta.db_table)
        sql = f"UPDATE {table} SET cost = %s, cost_status = %s WHERE id = %s"  # noqa: S608 - the model's table, values bound
        for start in range(0, len(updates), BATCH):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(sql, updates[start : start + BATCH])
        return seen, len(updates)
