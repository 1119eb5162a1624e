from django.urls import path

from gpuconfig import views

app_name = "gpuconfig"
urlpatterns = [
    path("gpu/", views.gpu_settings, name="settings"),
    path("system/", views.system_settings, name="system"),
]
