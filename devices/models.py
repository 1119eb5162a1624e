"""The GPU inventory: the GPU hosts of the AI system and one row per GPU ever detected on
each (the design's ``gpu_devices``)."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone


class GpuVendorChoice(models.TextChoices):
    # Same values as devices.detection.GpuVendor.
    NVIDIA = "nvidia", "NVIDIA"
    AMD = "amd", "AMD"


# A host's GPUs take the global indexes base .. base + 99 (base = 100 x the host's number;
# the local host is number 0), so the indexes every plan, pin and version already use stay
# unique and stable across hosts, and a one-host install keeps its numbers.
HOST_INDEX_STRIDE = 100
LOCAL_HOST_NAME = "local"


class HostStatus(models.TextChoices):
    JOINING = "joining", "Joining"  # added; its agent has not joined with the token yet
    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"  # its agent stopped answering (offline_since says when)
    REVOKED = "revoked", "Revoked"  # its credential is refused everywhere


class Host(models.Model):
    """A machine whose GPUs GPU Config manages. The machine GPU Config runs on is the
    implicit local host (no agent: detection and podman run here); every other host runs
    an agent, a Celery worker that consumes only that host's queue."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.SlugField(max_length=63, unique=True)
    number = models.PositiveIntegerField(
        unique=True, help_text="0 for the local host; its GPUs' indexes start at 100 x this."
    )
    is_local = models.BooleanField(default=False, editable=False)
    status = models.CharField(max_length=16, choices=HostStatus.choices, default=HostStatus.JOINING)
    maintenance = models.BooleanField(
        default=False, help_text="In maintenance: no plan places services on its GPUs."
    )
    agent_version = models.CharField(max_length=64, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    offline_since = models.DateTimeField(null=True, blank=True)
    # Only hashes (SHA-256) are kept: the join token and the credential are shown once.
    join_token_hash = models.CharField(max_length=64, blank=True, editable=False)
    join_token_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    joined_at = models.DateTimeField(null=True, blank=True, editable=False)
    credential_hash = models.CharField(max_length=64, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    compose_project = models.CharField(max_length=64, blank=True)
    reported_at = models.DateTimeField(
        null=True, blank=True, help_text="When its agent last reported GPUs and containers."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "gpu_hosts"
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_local"], condition=Q(is_local=True), name="gpu_hosts_one_local"
            ),
            models.CheckConstraint(
                condition=Q(status__in=[choice.value for choice in HostStatus]),
                name="gpu_hosts_status_known",
            ),
            models.CheckConstraint(
                condition=Q(is_local=False) | Q(number=0), name="gpu_hosts_local_is_number_0"
            ),
            models.CheckConstraint(
                condition=Q(is_local=True) | Q(number__gt=0), name="gpu_hosts_agents_number_1_up"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def index_base(self) -> int:
        return self.number * HOST_INDEX_STRIDE

    @property
    def queue(self) -> str:
        """The Celery queue its agent consumes (the local host has none: no agent)."""
        return f"host.{self.name}"


def local_host_pk() -> uuid.UUID:
    """The local host's key (created on first use): the default host of a GPU row, so that
    a one-host install and every existing caller need not know hosts exist."""
    # Only the key is read: migrations call this (the host column's default, when existing
    # GPU rows are filled in) while later columns of the table do not exist yet.
    found = Host.objects.filter(is_local=True).values_list("pk", flat=True).first()
    if found is not None:
        return found
    host, _ = Host.objects.get_or_create(
        is_local=True,
        defaults={"name": LOCAL_HOST_NAME, "number": 0, "status": HostStatus.ONLINE},
    )
    return host.pk


class HostService(models.Model):
    """A labelled service of a host's compose file, as its agent last reported it: a service
    can be placed only on a host whose compose file defines it."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="services")
    service_name = models.CharField(max_length=64)
    labels = models.JSONField(default=dict, help_text="Its gpuconfig.* labels, as reported.")
    # Its container as the agent last saw it (state, health, CDI devices, the GPU variables
    # of its environment); None: no container, or the agent could not read podman.
    container = models.JSONField(null=True, blank=True)
    reported_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "gpu_host_services"
        ordering = ["host__number", "service_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["host", "service_name"], name="gpu_host_services_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.service_name} on {self.host}"


class GpuDevice(models.Model):
    """A GPU as last detected. Rows are never deleted by a re-scan: a GPU that disappears is
    marked ``present=False`` so that assignments pointing at it can be flagged."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    host = models.ForeignKey(
        Host, on_delete=models.PROTECT, related_name="gpus", default=local_host_pk
    )
    # Global: host.index_base + the index on its host (device_index below, for agents' GPUs).
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
