"""Plausible prices and a budget for the demo team (RunTools publishes no price table)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from runs.models import Budget, Price, Team

# Dollars per million tokens: (input, output, cached input, reasoning); None = as input/output.
DEMO_PRICES = {
    "": ("3", "15", "0.30", None),  # the team default
    "support-chat": ("0.80", "4", "0.08", None),
    "deep-thinker": ("15", "60", "1.50", "60"),
}


def seed_prices(team: Team, user=None) -> None:
    """Give the team a default price and two agent prices, in force for the last 90 days, and a
    monthly budget with a warning at 75% (no hard stop: the demo should keep working).

    Idempotent. Call it before seeding runs, so they are priced as they finish.
    """
    since = timezone.now().date() - timedelta(days=90)
    for agent, rates in DEMO_PRICES.items():
        input_rate, output_rate, cached, reasoning = rates
        Price.objects.get_or_create(
            team=team,
            agent=agent,
            effective_from=since,
            defaults={
                "input_per_million": Decimal(input_rate),
                "output_per_million": Decimal(output_rate),
                "cached_input_per_million": Decimal(cached) if cached else None,
                "reasoning_per_million": Decimal(reasoning) if reasoning else None,
                "created_by": user,
            },
        )
    Budget.objects.get_or_create(
        team=team,
        agent="",
        defaults={"monthly_limit": Decimal("10"), "warn_percent": 75, "updated_by": user},
    )
