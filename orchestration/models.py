"""Apply runs: the state of one Apply & Restart (or rollback), moved forward in rows."""

from __future__ import annotations

import shlex
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    ROLLING_BACK = "rolling_back", "Rolling back"
    SUCCEEDED = "succeeded", "Succeeded"
    ROLLED_BACK = "rolled_back", "Rolled back"
    ROLLBACK_FAILED = "rollback_failed", "Rollback failed"
    FAILED = "failed", "Failed"
    INTERRUPTED = "interrupted", "Interrupted"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.ROLLING_BACK)


class RunKind(models.TextChoices):
    APPLY = "apply", "Apply"
    ROLLBACK = "rollback", "Manual rollback"


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RECREATING = "recreating", "Recreating"
    VERIFYING = "verifying", "Verifying"
    HEALTHY = "healthy", "Healthy"
    FAILED = "failed", "Failed"
    ROLLED_BACK = "rolled_back", "Rolled back"


class ApplyRun(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=RunKind.choices, default=RunKind.APPLY)
    status = models.CharField(max_length=24, choices=RunStatus.choices, default=RunStatus.QUEUED)
    version = models.ForeignKey(
        "gpuconfig.ConfigVersion", on_delete=models.PROTECT, related_name="apply_runs"
    )
    previous_version = models.ForeignKey(
        "gpuconfig.ConfigVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The version that was applied before; restored on failure.",
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        db_table = "gpu_apply_runs"
        ordering = ["-created_at"]
        constraints = [
            # At most one active run: the database, not a race-prone check, gives the 409.
            models.UniqueConstraint(
                models.Value(True),
                condition=Q(status__in=["queued", "running", "rolling_back"]),
                name="gpu_apply_runs_one_active",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES


class ServiceStep(models.Model):
    run = models.ForeignKey(ApplyRun, on_delete=models.CASCADE, related_name="steps")
    service_name = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    from_gpu = models.IntegerField(null=True, blank=True)
    to_gpu = models.IntegerField(null=True, blank=True)
    message = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "gpu_apply_steps"
        ordering = ["service_name"]
        constraints = [
            models.UniqueConstraint(fields=["run", "service_name"], name="gpu_apply_steps_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.service_name}: {self.status}"


class ApplyCommand(models.Model):
    """One command a run ran, as Read the Docs records a build's commands: what ran, how it
    ended, when, for how long, and its output (bounded: the head and the tail are kept, so
    the first error line survives a long output)."""

    run = models.ForeignKey(ApplyRun, on_delete=models.CASCADE, related_name="commands")
    argv = models.JSONField(help_text="The argument list, exactly as run (no shell).")
    exit_code = models.IntegerField(null=True, blank=True, help_text="Empty: killed at timeout")
    timed_out = models.BooleanField(default=False)
    started_at = models.DateTimeField()
    duration_s = models.FloatField()
    output = models.TextField(blank=True)

    class Meta:
        db_table = "gpu_apply_commands"
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return self.command_line

    @property
    def command_line(self) -> str:
        """The argv as one line, for people (shlex quoting where an argument needs it)."""
        return shlex.join(str(arg) for arg in self.argv)

    @property
    def outcome(self) -> str:
        if self.timed_out:
            return f"killed after {self.duration_s:.1f} s (timeout)"
        return f"exit {self.exit_code} after {self.duration_s:.1f} s"
