"""`manage.py alerts`: evaluate every alert rule and send what is due, once (cron, tests)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from runs.operations.delivery import alerts_round


class Command(BaseCommand):
    help = "Evaluate every alert rule once and send the deliveries that are due."

    def handle(self, *args, **options) -> None:
        events, sent = alerts_round()
        self.stdout.write(f"{events} alert event(s), {sent} delivery(ies) sent")
