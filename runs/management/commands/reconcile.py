"""Compare a team's recorded usage with RunTools' own, for cron or CI.

Exit status: 0 when the difference is within the threshold, 1 when it exceeds it, 2 when
RunTools' usage could not be read (the reason is printed).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from runs.accounting.reconcile import PERIODS, Reconciliation, reconcile
from runs.models import Team


class Command(BaseCommand):
    help = "Print a team's reconciliation with RunTools; non-zero exit past the threshold."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--team", required=True, help="The team's slug.")
        parser.add_argument("--period", default="30d", choices=list(PERIODS))
        parser.add_argument(
            "--threshold",
            type=float,
            default=1.0,
            help="Largest acceptable difference in total tokens, percent (default 1).",
        )

    def handle(self, *args, team: str, period: str, threshold: float, **options) -> None:
        if threshold < 0:
            raise CommandError("--threshold must be 0 or more")
        found = Team.objects.filter(slug=team).first()
        if found is None:
            raise CommandError(f"No team with slug {team!r}.")
        result = reconcile(found, period)
        self.stdout.write(render(result))
        if result.difference_percent is None:
            raise CommandError("RunTools' usage could not be read; nothing compared.", returncode=2)
        if result.difference_percent > threshold:
            raise CommandError(
                f"The difference, {result.difference_percent}%, exceeds {threshold:g}%.",
                returncode=1,
            )


def render(r: Reconciliation) -> str:
    lines = [
        f"Team {r.team.slug}, {r.period}: {r.since:%Y-%m-%d %H:%M} to {r.until:%Y-%m-%d %H:%M} UTC"
    ]
    if r.scope_note:
        lines.append(r.scope_note)
    if r.upstream is not None:
        lines.append(
            f"RunTools ({r.scope}): {r.upstream.runs} runs, {r.upstream.total} tokens "
            f"({r.upstream.input} in, {r.upstream.output} out)"
        )
    else:
        lines.append("RunTools: unknown")
    lines.append(
        f"rtdash: {r.recorded.runs} runs, {r.recorded.total} tokens "
        f"({r.recorded.input} in, {r.recorded.output} out)"
    )
    if r.difference is not None:
        lines.append(f"Difference: {r.difference} tokens ({r.difference_percent}%)")
    lines.append(f"Outside rtdash: {r.outside_count} run(s), {r.outside_tokens} tokens looked up")
    lines += [f"  {run.id} {run.agent} {run.created_at}" for run in r.outside_runs]
    lines.append(f"Still followed: {r.following_count}; without usage: {r.no_usage_count}")
    balance = f"${r.balance}" if r.balance is not None else "unknown"
    charged = f"${r.charged}" if r.charged is not None else "unknown"
    lines.append(
        f"Credits: balance {balance}, charged in the period {charged}; rtdash's cost "
        f"${r.recorded_cost} ({r.unpriced_runs} unpriced, {r.partial_runs} partial)"
    )
    lines += [f"Problem ({p.what}): {p.message}" for p in r.problems]
    return "\n".join(lines)
