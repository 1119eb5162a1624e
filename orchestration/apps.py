from django.apps import AppConfig


class OrchestrationConfig(AppConfig):
    name = "orchestration"
    verbose_name = "Apply runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The planner's time goes to /metrics from every process that plans.
        from orchestration.metrics import install_plan_timer

        install_plan_timer()
