"""`manage.py demo`: the seed `make run` relies on."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db.models import Sum

from runs.models import DailyUsage, GatewayToken, Run, Team, Thread

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_seeds_a_real_history_once(capsys):
    call_command("demo", runs=40)
    out = capsys.readouterr().out
    assert "demo / demo" in out
    assert "rtd_" in out
    team = Team.objects.get(slug="demo")
    runs = Run.objects.filter(team=team)
    assert runs.count() == 40
    assert not runs.filter(status="running").exists()
    assert runs.filter(source="gateway").exists() and runs.filter(source="playground").exists()
    assert runs.filter(user__isnull=False).values("user").distinct().count() >= 2
    assert runs.filter(status="completed", output_tokens__gt=0).exists()
    # Spread over the month, and the rollup agrees with the runs.
    assert runs.dates("started_at", "day").count() > 5
    assert DailyUsage.objects.filter(team=team).aggregate(n=Sum("runs"))["n"] == 40
    assert Thread.objects.filter(team=team).exists()

    call_command("demo", runs=40)
    assert Run.objects.filter(team=team).count() == 40
    assert GatewayToken.objects.filter(team=team, name="demo script").count() == 2
