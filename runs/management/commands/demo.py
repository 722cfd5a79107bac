"""Seed the demo: user demo/demo owning team demo, the simulator's key and a gateway token.

Idempotent: running it again changes nothing but issues a fresh token (the old plaintext
cannot be shown again, by design).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from runs.models import GatewayToken, Membership, Role, RunToolsKey, Team

DEMO_KEY = "rt_test_demo"


class Command(BaseCommand):
    help = "Create the demo user, team, RunTools key and a gateway token (idempotent)."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
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
        _, plaintext = GatewayToken.issue(team, "demo script", created_by=user)
        self.stdout.write(f"Demo login: demo / demo (team {team.slug})")
        self.stdout.write(f"Gateway token (shown once): {plaintext}")
