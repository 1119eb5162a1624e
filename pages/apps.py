from django.apps import AppConfig


class PagesConfig(AppConfig):
    """The Settings pages (HTML): above gpuconfig and orchestration, imported by neither."""

    name = "pages"
    verbose_name = "Settings pages"
