from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html

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


class EditedOnTheSettingsPage(admin.ModelAdmin):
    """Read-only in the admin, with a link to where the rows are edited.

    These rows are one piece of a saved configuration: a version, the resolved GPUs and
    budgets of every service, and ``gpu-assignments.yml``, all written in one transaction
    after the whole plan is validated against the detected GPUs. A raw edit of one row can do
    none of that (``gpu_index=7`` on a two-GPU host was accepted, with no version and no file),
    so the Settings page and the API stay the one way in, and the admin shows the rows.
    """

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        self._point_to_the_page(request)
        return super().changelist_view(request, extra_context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        self._point_to_the_page(request)
        return super().change_view(request, object_id, form_url, extra_context)

    def _point_to_the_page(self, request: HttpRequest) -> None:
        if request.method == "GET":
            messages.info(
                request,
                format_html(
                    'Read-only here: change assignments on <a href="{}">Settings &rsaquo; GPU '
                    "Configuration</a>, which validates, versions and writes them together.",
                    reverse("pages:settings"),
                ),
            )


@admin.register(GpuConfiguration)
class GpuConfigurationAdmin(EditedOnTheSettingsPage):
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
class ConfigVersionAdmin(EditedOnTheSettingsPage):
    # Versions are history (made by saving, rolled back to): never added, changed or deleted
    # by hand.
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
