from django.contrib import admin

from orchestration.models import ApplyRun, ServiceStep


class ServiceStepInline(admin.TabularInline):
    model = ServiceStep
    extra = 0
    can_delete = False
    readonly_fields = (
        "service_name",
        "status",
        "from_gpu",
        "to_gpu",
        "container_id_before",
        "container_id_after",
        "message",
        "updated_at",
    )


@admin.register(ApplyRun)
class ApplyRunAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "status", "version", "requested_by", "created_at", "finished_at")
    list_filter = ("status", "kind")
    search_fields = ("id", "error", "requested_by__username")
    readonly_fields = (
        "id",
        "created_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "command",
        "output",
    )
    inlines = [ServiceStepInline]
