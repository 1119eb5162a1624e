"""The GPU inventory: one row per GPU index ever detected (the design's ``gpu_devices``)."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone


class GpuDevice(models.Model):
    """A GPU as last detected. Rows are never deleted by a re-scan: a GPU that disappears is
    marked ``present=False`` so that assignments pointing at it can be flagged."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    gpu_index = models.IntegerField(unique=True)
    uuid = models.CharField("UUID", max_length=96, blank=True)
    name = models.CharField(max_length=128)
    vram_total_mb = models.IntegerField(null=True, blank=True)
    vram_available_mb = models.IntegerField(null=True, blank=True)
    compute_capability = models.CharField(max_length=16, blank=True)
    present = models.BooleanField(
        default=True, help_text="False when the last re-scan no longer saw this GPU."
    )
    last_seen_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "gpu_devices"
        ordering = ["gpu_index"]
        constraints = [
            models.CheckConstraint(
                condition=Q(gpu_index__gte=0), name="gpu_devices_index_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(vram_total_mb__isnull=True) | Q(vram_total_mb__gt=0),
                name="gpu_devices_vram_total_positive",
            ),
            models.CheckConstraint(
                condition=Q(vram_available_mb__isnull=True) | Q(vram_available_mb__gte=0),
                name="gpu_devices_vram_available_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"GPU {self.gpu_index}: {self.name}"
