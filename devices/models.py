"""The GPU inventory: one row per GPU index ever detected (the design's ``gpu_devices``)."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone


class GpuVendorChoice(models.TextChoices):
    # Same values as devices.detection.GpuVendor.
    NVIDIA = "nvidia", "NVIDIA"
    AMD = "amd", "AMD"


class GpuDevice(models.Model):
    """A GPU as last detected. Rows are never deleted by a re-scan: a GPU that disappears is
    marked ``present=False`` so that assignments pointing at it can be flagged."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    gpu_index = models.IntegerField(unique=True)
    vendor = models.CharField(
        max_length=16, choices=GpuVendorChoice.choices, default=GpuVendorChoice.NVIDIA
    )
    device_index = models.IntegerField(
        null=True,
        blank=True,
        help_text="The vendor's own number, used in the container device name "
        "(amd.com/gpu=N); empty: the same as the index.",
    )
    render_node = models.CharField(
        max_length=64, blank=True, help_text="DRM render node read from sysfs (AMD)."
    )
    integrated = models.BooleanField(
        default=False,
        help_text="An integrated GPU whose VRAM is a small BIOS carve-out (detected).",
    )
    planned = models.BooleanField(
        default=True,
        help_text="Whether strategies may place services on this GPU. Detection leaves "
        "integrated GPUs out when it first sees them; tick to include one.",
    )
    uuid = models.CharField("UUID", max_length=96, blank=True)
    name = models.CharField(max_length=128)
    vram_total_mb = models.IntegerField(null=True, blank=True)
    vram_available_mb = models.IntegerField(null=True, blank=True)
    vram_reserved_mb = models.IntegerField(
        null=True,
        blank=True,
        help_text="Memory the driver keeps for itself (NVML memory info v2); "
        "empty where the source cannot tell.",
    )
    compute_capability = models.CharField(max_length=16, blank=True)
    # Maintenance (cordon): the GPU takes no new services in any plan; those already on it
    # stay until drained. Set by staff, or by GPU Config on a critical health event. Kept
    # on this row so it survives restarts and re-scans (a re-scan never writes these).
    maintenance = models.BooleanField(
        default=False, help_text="In maintenance: no new services are planned onto it."
    )
    maintenance_reason = models.TextField(blank=True)
    maintenance_by = models.CharField(
        max_length=150, blank=True, help_text="Who put it in maintenance (a user, or GPU Config)."
    )
    maintenance_since = models.DateTimeField(null=True, blank=True)
    maintenance_automatic = models.BooleanField(
        default=False, help_text="Put in maintenance by GPU Config on a critical health event."
    )
    maintenance_drain = models.BooleanField(
        default=False,
        help_text="Drained: plans move the services on it elsewhere too (until it leaves "
        "maintenance).",
    )
    # The critical health reasons standing when staff last took the GPU out of maintenance:
    # the same reasons do not cordon it again, a new one does.
    health_acknowledged = models.TextField(blank=True)
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
            models.CheckConstraint(
                condition=Q(vram_reserved_mb__isnull=True) | Q(vram_reserved_mb__gte=0),
                name="gpu_devices_vram_reserved_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(vendor__in=[choice.value for choice in GpuVendorChoice]),
                name="gpu_devices_vendor_known",
            ),
            models.CheckConstraint(
                condition=Q(device_index__isnull=True) | Q(device_index__gte=0),
                name="gpu_devices_device_index_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"GPU {self.gpu_index}: {self.name}"

    @property
    def vendor_index(self) -> int:
        """The index the vendor's container device name uses."""
        return self.gpu_index if self.device_index is None else self.device_index


class ServiceVramPeak(models.Model):
    """The most GPU memory a compose service was measured holding (all its processes).

    Written by the sampler only when a sample beats the stored peak, so that
    ``manage.py suggest_estimates`` (another process) can read it; reset by that command.
    """

    service = models.CharField(max_length=64, unique=True)
    peak_mb = models.IntegerField()
    gpu_uuid = models.CharField("GPU UUID at the peak", max_length=96, blank=True)
    measured_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "gpu_service_vram_peaks"
        ordering = ["service"]
        constraints = [
            models.CheckConstraint(
                condition=Q(peak_mb__gte=0), name="gpu_service_vram_peaks_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.service}: {self.peak_mb} MB peak"
