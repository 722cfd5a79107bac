"""What the experiment tests share: a recorded thread, and waiting for a replay to end."""

from __future__ import annotations

import json
import time

from runs.models import Experiment
from tests.helpers import gateway_run


def recorded_thread(token: str, agent: str = "code-assistant") -> tuple[str, list]:
    """A two-turn thread recorded through rtdash's gateway: (upstream id, its runs)."""
    first = gateway_run(token, {"agent": agent, "prompt": "Check app/models.py"})
    second = gateway_run(
        token, {"agent": agent, "prompt": "Go on", "threadId": first.upstream_thread_id}
    )
    return first.upstream_thread_id, [first, second]


def post(client, body: dict, **headers):
    return client.post(
        "/api/experiments", json.dumps(body), content_type="application/json", **headers
    )


def wait_until_ended(experiment_id: int, timeout: float = 60) -> Experiment:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        experiment = Experiment.objects.get(pk=experiment_id)
        if experiment.status != "running":
            return experiment
        time.sleep(0.1)
    raise AssertionError(f"experiment {experiment_id} still running after {timeout}s")
