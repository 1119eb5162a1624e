from django.contrib import admin

from devices.models import GpuDevice, ServiceVramPeak
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
