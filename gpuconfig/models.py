"""Per-service GPU assignments, system settings and the saved configuration versions."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Strategy(models.TextChoices):
    # Same values as gpuconfig.domain.StrategyName (a test keeps the two in step).
    MANUAL = "manual", "Manual"
    VRAM_BASED = "vram_based", "VRAM-based"
    LATENCY_OPTIMIZED = "latency_optimized", "Latency-optimized"
    ISOLATION_FIRST = "isolation_first", "Isolation-first"
    BALANCED = "balanced", "Balanced"


_STRATEGY_VALUES = [choice.value for choice in Strategy]


class GpuConfiguration(models.Model):
    """One managed service's GPU choice (the design's ``gpu_configurations``).

    ``gpu_index`` is the user's pin (NULL lets the strategy decide); ``resolved_gpu_index``
    and ``vram_budget_gb`` are what the last save resolved, and what the files say.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    service_name = models.CharField(max_length=64, unique=True)
    gpu_index = models.IntegerField(null=True, blank=True, help_text="Pinned GPU; empty = auto")
    strategy = models.CharField(max_length=32, choices=Strategy.choices, default=Strategy.MANUAL)
    vram_budget_override = models.FloatField(
        null=True, blank=True, help_text="VRAM budget in GiB chosen by the user (overrides auto)"
    )
    enabled = models.BooleanField(default=True)
    resolved_gpu_index = models.IntegerField(null=True, blank=True, editable=False)
    vram_budget_gb = models.FloatField(null=True, blank=True, editable=False)
    budget_auto_adjusted = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "gpu_configurations"
        ordering = ["service_name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(gpu_index__isnull=True) | Q(gpu_index__gte=0),
                name="gpu_configurations_index_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(resolved_gpu_index__isnull=True) | Q(resolved_gpu_index__gte=0),
                name="gpu_configurations_resolved_index_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(vram_budget_override__isnull=True) | Q(vram_budget_override__gt=0),
                name="gpu_configurations_budget_positive",
            ),
            models.CheckConstraint(
                condition=Q(strategy__in=_STRATEGY_VALUES),
                name="gpu_configurations_strategy_known",
            ),
            models.CheckConstraint(
                condition=~Q(service_name=""), name="gpu_configurations_service_name_not_empty"
            ),
        ]

    def __str__(self) -> str:
        return self.service_name


class SystemSetting(models.Model):
    """A key/value setting (the design's ``system_settings``), e.g. the default strategy."""

    key = models.CharField(max_length=64, primary_key=True)
    value = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "system_settings"
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class ConfigVersion(models.Model):
    """Every saved configuration, kept whole so any two can be compared and rolled back to."""

    number = models.PositiveIntegerField(unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    strategy = models.CharField(max_length=32, choices=Strategy.choices)
    # {"ai-llm": {"gpu": 0, "gpu_uuid": "...", "vram_budget": null, "enabled": true, ...}, ...}
    assignments = models.JSONField()
    warnings = models.JSONField(default=list)
    # Set once an apply of this version has succeeded; rollback targets the previous one.
    applied_at = models.DateTimeField(null=True, blank=True)
    # A rollback saves a copy of an older version as the newest: the version it copies. The
    # "restored" warning says the same for people to read; nothing parses it.
    restored_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        # Versions are never deleted by the app; a test or a hand that deletes one leaves its
        # copies without the link rather than refusing.
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The version this one is a copy of, when a rollback saved it.",
    )

    class Meta:
        db_table = "gpu_config_versions"
        ordering = ["-number"]
        constraints = [
            models.CheckConstraint(
                condition=Q(strategy__in=_STRATEGY_VALUES),
                name="gpu_config_versions_strategy_known",
            ),
        ]

    def __str__(self) -> str:
        return f"Version {self.number} ({self.strategy})"
