from django.apps import AppConfig


class CommonConfig(AppConfig):
    """What every app shares; an app only for its checks and `manage.py prepare_data_dir`."""

    name = "common"
    verbose_name = "Common"

    def ready(self) -> None:
        from django.core import checks

        from common.data_dir import data_dir_check

        checks.register(data_dir_check)
