from django.contrib import admin

from gpuconfig.models import ConfigVersion, GpuConfiguration, SystemSetting


@admin.register(GpuConfiguration)
class GpuConfigurationAdmin(admin.ModelAdmin):
    list_display = (
        "service_name",
        "gpu_index",
        "resolved_gpu_index",
        "strategy",
        "vram_budget_override",
        "vram_budget_gb",
        "budget_auto_adjusted",
        "enabled",
        "updated_at",
    )
    list_filter = ("enabled", "strategy", "resolved_gpu_index", "budget_auto_adjusted")
    search_fields = ("service_name",)
    readonly_fields = (
        "id",
        "resolved_gpu_index",
        "vram_budget_gb",
        "budget_auto_adjusted",
        "created_at",
        "updated_at",
    )


@admin.register(SystemSetting)
class SystemSettingAdmin(admin.ModelAdmin):
    list_display = ("key", "value", "updated_at")
    search_fields = ("key",)
    readonly_fields = ("updated_at",)


@admin.register(ConfigVersion)
class ConfigVersionAdmin(admin.ModelAdmin):
    list_display = ("number", "strategy", "created_by", "created_at", "applied_at")
    list_filter = ("strategy", "created_by")
    search_fields = ("number", "created_by__username")
    readonly_fields = (
        "number",
        "strategy",
        "assignments",
        "warnings",
        "created_by",
        "created_at",
        "applied_at",
    )

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        # Versions are history: they are made by saving a configuration, never by hand.
        return False
