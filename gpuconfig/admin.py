from typing import Any

from django import forms
from django.contrib import admin

from gpuconfig.models import ConfigVersion, GpuConfiguration, SystemSetting
from gpuconfig.system_settings import SettingError, validate_setting


class SystemSettingForm(forms.ModelForm):
    """Raw edits go through the same validation as the System tab: no bad value is stored."""

    class Meta:
        model = SystemSetting
        fields = ("key", "value")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "key" in cleaned and "value" in cleaned:
            try:
                cleaned["value"] = validate_setting(cleaned["key"], cleaned["value"])
            except SettingError as exc:
                raise forms.ValidationError(str(exc)) from None
        return cleaned


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
    form = SystemSettingForm
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
