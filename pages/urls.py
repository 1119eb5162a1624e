from django.urls import path

from pages import backup_views, views

app_name = "pages"
urlpatterns = [
    path("gpu/", views.gpu_settings, name="settings"),
    path("system/", views.system_settings, name="system"),
    path("system/backup/", backup_views.backup_download, name="backup-download"),
    path("system/backup/import/", backup_views.backup_import, name="backup-import"),
]
