from django.apps import AppConfig


class GpuconfigConfig(AppConfig):
    name = "gpuconfig"
    verbose_name = "GPU assignments"
    default_auto_field = "django.db.models.BigAutoField"
