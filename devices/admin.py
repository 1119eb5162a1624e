from django.contrib import admin

from devices.models import GpuDevice


@admin.register(GpuDevice)
class GpuDeviceAdmin(admin.ModelAdmin):
    list_display = (
        "gpu_index",
        "name",
        "vram_total_mb",
        "vram_available_mb",
        "compute_capability",
        "present",
        "last_seen_at",
    )
    list_filter = ("present", "compute_capability", "name")
    search_fields = ("name", "uuid")
    readonly_fields = ("id", "created_at", "updated_at", "last_seen_at")
    ordering = ("gpu_index",)
