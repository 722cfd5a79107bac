"""`manage.py experiment run`: replay a thread against variants in-process, for CI.

Prints a table (one line per case, a column per variant) and exits non-zero when a variant
fails a case the baseline passed, or costs more than --fail-if-cost-up percent above it.
"""

from __future__ import annotations

import asyncio

from django.core.management.base import BaseCommand, CommandError
from django.http import Http404

from runs.core.validation import InvalidRequest
from runs.experiments.create import create_experiment
from runs.experiments.results import experiment_data, regressions
from runs.experiments.runner import run_experiment
from runs.experiments.spec import parse_spec, parse_variant_line
from runs.models import Team


def _cell(turn: dict) -> str:
    cost = turn["cost"] if turn["cost"] is not None else "unpriced"
    tokens = f"{turn['inputTokens'] or 0}/{turn['outputTokens'] or 0}"
    return f"{turn['status']} {tokens} {cost}"


class Command(BaseCommand):
    help = "Replay a recorded thread against one or more variants and compare them."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        run = sub.add_parser("run", help="Replay a thread and print the comparison.")
        run.add_argument("--team", required=True, help="The team's slug.")
        run.add_argument("--thread", required=True, help="The upstream thread id to replay.")
        run.add_argument(
            "--variant",
            action="append",
            required=True,
            help="agent=...,maxTurns=...,maxTokens=...,temperature=... (repeatable)",
        )
        run.add_argument("--name", default="")
        run.add_argument("--fail-if-cost-up", type=float, default=None, metavar="PCT")

    def handle(self, *args, **options) -> None:
        team = Team.objects.filter(slug=options["team"]).first()
        if team is None:
            raise CommandError(f"No team with slug {options['team']!r}.")
        try:
            variants = [
                vars(parse_variant_line(line, f"--variant {n}"))
                for n, line in enumerate(options["variant"], 1)
            ]
            spec = parse_spec(
                {
                    "name": options["name"],
                    "source": {"thread": options["thread"]},
                    "variants": variants,
                }
            )
            experiment = create_experiment(team, spec)
        except InvalidRequest as problem:
            raise CommandError(problem.message) from None
        except Http404:
            raise CommandError(
                f"Team {team.slug} has no recorded thread {options['thread']}."
            ) from None
        # In-process to completion; its heartbeat keeps workers' reapers off it meanwhile.
        experiment = asyncio.run(run_experiment(experiment.pk))
        data = experiment_data(experiment)
        self._print(data)
        problems = regressions(data, options["fail_if_cost_up"])
        for problem in problems:
            self.stderr.write(f"REGRESSION {problem}")
        if problems or data["status"] != "completed":
            raise CommandError(
                f"Experiment {experiment.pk} {data['status']}; {len(problems)} regression(s)."
            )
        self.stdout.write(f"Experiment {experiment.pk} completed; no regressions.")

    def _print(self, data: dict) -> None:
        columns = (["baseline"] if "baseline" in data else []) + [
            v["agent"] + "".join(f" {k}={val}" for k, val in v["config"].items())
            for v in data["variants"]
        ]
        self.stdout.write("case  " + " | ".join(f"{c:<32}" for c in columns))
        parts = ([data["baseline"]] if "baseline" in data else []) + data["variants"]
        for index in range(len(parts[0]["turns"])):
            cells = [_cell(part["turns"][index]) for part in parts]
            self.stdout.write(f"{index + 1:<5} " + " | ".join(f"{c:<32}" for c in cells))
        totals = [
            f"{t['completed']}/{t['cases']} {t['inputTokens']}/{t['outputTokens']} "
            f"{t['cost'] or 'unpriced'}"
            for t in (part["totals"] for part in parts)
        ]
        self.stdout.write("total " + " | ".join(f"{c:<32}" for c in totals))
