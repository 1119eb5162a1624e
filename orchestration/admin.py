"""Apply runs in the admin: read-only records of what each run did."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from orchestration.models import ApplyCommand, ApplyRun, ServiceStep


class _ReadOnlyInline(admin.TabularInline):
    """Rows a run wrote; the admin shows them and never edits them."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ServiceStepInline(_ReadOnlyInline):
    model = ServiceStep
    readonly_fields = ("service_name", "status", "from_gpu", "to_gpu", "message", "updated_at")


class ApplyCommandInline(_ReadOnlyInline):
    model = ApplyCommand
    fields = ("started_at", "command_line", "outcome", "output")
    readonly_fields = fields


@admin.register(ApplyRun)
class ApplyRunAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "status", "version", "requested_by", "created_at", "finished_at")
    list_filter = ("status", "kind")
    search_fields = ("id", "error", "requested_by__username")
    readonly_fields = ("id", "created_at", "started_at", "finished_at", "heartbeat_at")
    inlines = [ServiceStepInline, ApplyCommandInline]
