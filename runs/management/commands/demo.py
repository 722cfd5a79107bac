"""Seed the demo: user demo/demo owning team demo, the simulator's key, a gateway token, and
a few hundred real runs over the last 30 days.

Idempotent: running it again adds no history and changes nothing but issues a fresh token (the
old plaintext cannot be shown again, by design).

`--simulator-store PATH` (default `$SIM_STORE`; `make run` sets it) is the file the simulator
keeps its state in: the seed writes the demo's threads there, and `make run`'s simulator loads
them, so every demo thread page finds its thread upstream. A history seeded without that file
has its threads replayed into it.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from runs.demo.history import replay_missing_threads, seed_with_simulator
from runs.demo.prices import seed_prices
from runs.models import GatewayToken, Membership, Role, RunToolsKey, Team

DEMO_KEY = "rt_test_demo"
TEAMMATES = ("ana", "ben")
SCRIPT_TOKENS = ("ci-nightly", "support-bot")


class Command(BaseCommand):
    help = "Create the demo user, team, RunTools key, a gateway token and a run history."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--runs",
            type=int,
            default=300,
            help="Runs to seed when the team has no history yet (0 to skip). Default 300.",
        )
        parser.add_argument(
            "--simulator-store",
            default=os.environ.get("SIM_STORE") or None,
            help="The simulator's --store file, to write the demo's threads into "
            "(default: $SIM_STORE; none: the seeded threads are not kept).",
        )

    def handle(self, *args, runs: int, simulator_store: str | None, **options) -> None:
        if runs < 0:
            from django.core.management.base import CommandError

            raise CommandError("--runs must be 0 or more")
        team, user, plaintext = self._team()
        store_path = Path(simulator_store) if simulator_store else None
        if runs and not team.runs.exists():
            users = [user, *self._teammates(team)]
            tokens = [
                GatewayToken.objects.filter(team=team, name=name).first()
                or GatewayToken.issue(team, name, created_by=user)[0]
                for name in SCRIPT_TOKENS
            ]
            self.stdout.write(f"Seeding {runs} runs against a private simulator…")
            made = seed_with_simulator(
                team, users, tokens, runs, key=DEMO_KEY, store_path=store_path
            )
            self.stdout.write(f"Seeded {made} runs.")
        elif store_path is not None and team.threads.exists():
            replayed = replay_missing_threads(team, key=DEMO_KEY, store_path=store_path)
            if replayed:
                self.stdout.write(f"Replayed {replayed} threads into {store_path}.")
        self.stdout.write(f"Demo login: demo / demo (team {team.slug})")
        self.stdout.write(f"Gateway token (shown once): {plaintext}")

    @transaction.atomic
    def _team(self):
        user, created = get_user_model().objects.get_or_create(username="demo")
        if created or not user.check_password("demo"):
            user.set_password("demo")
            user.save()
        team, _ = Team.objects.get_or_create(slug="demo", defaults={"name": "Demo team"})
        Membership.objects.update_or_create(user=user, team=team, defaults={"role": Role.OWNER})
        if not team.runtools_keys.filter(revoked_at__isnull=True).exists():
            key = RunToolsKey(team=team, label="Simulator", is_default=True, created_by=user)
            key.set_secret(DEMO_KEY)
            key.save()
        # Prices before the history, so every seeded run is priced as it finishes.
        seed_prices(team, user)
        _, plaintext = GatewayToken.issue(team, "demo script", created_by=user)
        return team, user, plaintext

    def _teammates(self, team: Team) -> list:
        teammates = []
        for username in TEAMMATES:
            teammate, created = get_user_model().objects.get_or_create(username=username)
            if created:
                teammate.set_unusable_password()
                teammate.save()
            Membership.objects.get_or_create(
                user=teammate, team=team, defaults={"role": Role.MEMBER}
            )
            teammates.append(teammate)
        return teammates
