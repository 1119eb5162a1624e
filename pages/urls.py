from django.urls import path

from pages import backup_views, host_views, maintenance_views, views

app_name = "pages"
urlpatterns = [
    path("gpu/", views.gpu_settings, name="settings"),
    # One URL per action of the GPU form (its buttons' formaction; htmx posts the same).
    path("gpu/validate/", views.gpu_validate, name="gpu-validate"),
    path("gpu/preview/", views.gpu_preview, name="gpu-preview"),
    path("gpu/save/", views.gpu_save, name="gpu-save"),
    path("gpu/apply/", views.gpu_apply, name="gpu-apply"),
    path("gpu/rollback/", views.gpu_rollback, name="gpu-rollback"),
    path("gpu/discard/", views.gpu_discard, name="gpu-discard"),
    path("gpu/compare/", views.gpu_compare, name="gpu-compare"),
    path("gpu/restore/", views.gpu_restore, name="gpu-restore"),
    path(
        "gpu/<int:gpu_index>/maintenance/",
        maintenance_views.gpu_maintenance,
        name="gpu-maintenance",
    ),
    path("gpu/hosts/", host_views.host_add_view, name="host-add"),
    path(
        "gpu/hosts/<slug:name>/join-token/",
        host_views.host_join_token_view,
        name="host-join-token",
    ),
    path("gpu/hosts/<slug:name>/revoke/", host_views.host_revoke_view, name="host-revoke"),
    path("system/", views.system_settings, name="system"),
    path("system/backup/", backup_views.backup_download, name="backup-download"),
    path("system/backup/import/", backup_views.backup_import, name="backup-import"),
]
