"""Experiments: recorded threads, runs or prompt sets replayed against other agents or configs.

An experiment has cases (the turns of a thread, the selected runs, or the pasted prompts, in
order) and variants (agent, config, metadata). Each (variant, case) pair is one `Trial`, which
links to the ordinary recorded Run that replayed it; Run itself knows nothing of experiments.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from runs.models.runs import Run
from runs.models.teams import GatewayToken, Team


class ExperimentStatus(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class SourceKind(models.TextChoices):
    THREAD = "thread", "A recorded thread"
    RUNS = "runs", "Recorded runs"
    PROMPTS = "prompts", "A prompt set"


class Experiment(models.Model):
    team = models.ForeignKey(Team, models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=200)
    source_kind = models.CharField(max_length=10, choices=SourceKind.choices)
    # The replayed thread's upstream id, when the source is a thread.
    source_thread = models.CharField(max_length=200, blank=True)
    status = models.CharField(
        max_length=10, choices=ExperimentStatus.choices, default=ExperimentStatus.RUNNING
    )
    error_message = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    token = models.ForeignKey(
        GatewayToken, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # The worker replaying it stamps this while it works; a stale stamp means it died.
    heartbeat_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # The experiments page, newest first.
            models.Index(fields=["team", "-created_at"], name="experiment_team_recent"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_running(self) -> bool:
        return self.status == ExperimentStatus.RUNNING


class Case(models.Model):
    """One thing to ask: a turn of the thread, a selected run's input, or a pasted prompt."""

    experiment = models.ForeignKey(Experiment, models.CASCADE, related_name="cases")
    position = models.PositiveIntegerField()
    prompt = models.TextField(blank=True)
    messages = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The original run, when the case comes from recorded history: the baseline column.
    baseline_run = models.ForeignKey(Run, models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "position"], name="one_case_per_position"
            ),
        ]

    def __str__(self) -> str:
        return f"case {self.position} of experiment {self.experiment_id}"


class Variant(models.Model):
    experiment = models.ForeignKey(Experiment, models.CASCADE, related_name="variants")
    position = models.PositiveIntegerField()
    agent = models.CharField(max_length=200)
    config = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The fresh upstream thread this variant's replay of a thread runs in.
    upstream_thread_id = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "position"], name="one_variant_per_position"
            ),
        ]

    def __str__(self) -> str:
        return f"variant {self.position} ({self.agent}) of experiment {self.experiment_id}"


class TrialStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    SKIPPED = "skipped", "Skipped"


class Trial(models.Model):
    """One case asked of one variant, and the run that asked it."""

    variant = models.ForeignKey(Variant, models.CASCADE, related_name="trials")
    case = models.ForeignKey(Case, models.CASCADE, related_name="trials")
    run = models.ForeignKey(Run, models.SET_NULL, null=True, blank=True, related_name="+")
    status = models.CharField(max_length=10, choices=TrialStatus.choices, default="pending")
    # Why it was skipped (budget, cancel, a dead worker): shown in place of a result.
    error_code = models.CharField(max_length=100, blank=True)
    error_message = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["variant", "case"], name="one_trial_per_pair"),
        ]

    def __str__(self) -> str:
        return f"trial of case {self.case_id} on variant {self.variant_id}: {self.status}"
