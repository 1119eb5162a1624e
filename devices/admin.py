from django.contrib import admin
from django.http import HttpRequest

from devices.models import GpuDevice, Host, ServiceVramPeak
from devices.services import gpu_sample


@admin.register(GpuDevice)
class GpuDeviceAdmin(admin.ModelAdmin):
    list_display = (
        "gpu_index",
        "vendor",
        "name",
        "planned",
        "integrated",
        "vram_total_mb",
        "vram_available_mb",
        "vram_reserved_mb",
        "compute_capability",
        "present",
        "health",
        "maintenance",
        "maintenance_by",
        "last_seen_at",
    )
    list_filter = (
        "present",
        "maintenance",
        "vendor",
        "integrated",
        "planned",
        "compute_capability",
        "name",
    )
    # The operator's one choice per GPU here: include an integrated GPU in planning.
    list_editable = ("planned",)
    search_fields = ("name", "uuid")
    readonly_fields = ("id", "created_at", "updated_at", "last_seen_at")
    ordering = ("gpu_index",)

    @admin.display(description="Health")
    def health(self, device: GpuDevice) -> str:
        """The shared sample's verdict with its reasons (never a detection per row)."""
        verdict = gpu_sample().health.get(device.uuid) if device.present else None
        if verdict is None:
            return "unknown"
        return " ".join((verdict.state.value, *verdict.reasons))


@admin.register(ServiceVramPeak)
class ServiceVramPeakAdmin(admin.ModelAdmin):
    """The measured peaks behind the suggested estimates; delete a row to forget a peak."""

    list_display = ("service", "peak_mb", "gpu_uuid", "measured_at")
    search_fields = ("service",)
    ordering = ("service",)


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    """GPU hosts for raw edits: maintenance (no plan places services on its GPUs) and the
    compose project name; joining, revoking and tokens go through Settings or the API, which
    show the one-time secrets (only their hashes are stored, and never shown here)."""

    list_display = (
        "name",
        "number",
        "is_local",
        "status",
        "maintenance",
        "agent_version",
        "last_heartbeat_at",
        "offline_since",
        "reported_at",
    )
    list_filter = ("status", "maintenance")
    list_editable = ("maintenance",)
    search_fields = ("name",)
    fields = (
        "name",
        "number",
        "status",
        "maintenance",
        "compose_project",
        "agent_version",
        "last_heartbeat_at",
        "offline_since",
        "reported_at",
        "joined_at",
        "revoked_at",
        "created_at",
    )
    readonly_fields = (
        "number",
        "status",
        "agent_version",
        "last_heartbeat_at",
        "offline_since",
        "reported_at",
        "joined_at",
        "revoked_at",
        "created_at",
    )
    ordering = ("number",)

    def has_delete_permission(self, request: HttpRequest, obj: Host | None = None) -> bool:
        # Its GPUs (and the versions that name them) keep their rows: revoke instead.
        return False
