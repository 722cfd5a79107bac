"""Seed the demo: user demo/demo owning team demo, the simulator's key, a gateway token, and
a few hundred real runs over the last 30 days.

Idempotent: running it again adds no history and changes nothing but issues a fresh token (the
old plaintext cannot be shown again, by design).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from runs.demo_history import seed_with_simulator
from runs.demo_prices import seed_prices
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

    def handle(self, *args, runs: int, **options) -> None:
        if runs < 0:
            from django.core.management.base import CommandError

            raise CommandError("--runs must be 0 or more")
        team, user, plaintext = self._team()
        if runs and not team.runs.exists():
            users = [user, *self._teammates(team)]
            tokens = [
                GatewayToken.objects.filter(team=team, name=name).first()
                or GatewayToken.issue(team, name, created_by=user)[0]
                for name in SCRIPT_TOKENS
            ]
            self.stdout.write(f"Seeding {runs} runs against a private simulator…")
            made = seed_with_simulator(team, users, tokens, runs)
            self.stdout.write(f"Seeded {made} runs.")
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
