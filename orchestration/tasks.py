"""Celery tasks: an interface only. They take a run's id and call the service.

The agents' tasks (orchestration/agent/tasks.py) are imported here so that Celery's
autodiscovery, which reads each app's tasks module, registers them in every worker."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from orchestration.agent.tasks import agent_report_task
from orchestration.executor import apply_run_execute
from orchestration.host_checks import hosts_check
from orchestration.stale_runs import apply_runs_reap_stale

# Worst case: forward and rollback each run compose up and wait for health checks.
_SOFT_LIMIT = (
    2 * (settings.GPUCONFIG_COMPOSE_TIMEOUT_SECONDS + settings.GPUCONFIG_HEALTH_TIMEOUT_SECONDS)
    + 60
)


@shared_task(
    name="orchestration.apply_run",
    acks_late=True,
    soft_time_limit=_SOFT_LIMIT,
    time_limit=_SOFT_LIMIT + 30,
)
def apply_run_task(run_id: str) -> str | None:
    """Carry out one apply run. Redelivery is harmless: only a queued run is taken."""
    return apply_run_execute(run_id)


@shared_task(name="orchestration.reap_stale_runs", ignore_result=True)
def reap_stale_runs_task() -> list[str]:
    """Mark runs whose worker died as interrupted (Celery beat, see CELERY_BEAT_SCHEDULE)."""
    return [str(pk) for pk in apply_runs_reap_stale()]


@shared_task(name="orchestration.check_hosts", ignore_result=True)
def check_hosts_task() -> dict[str, list[str]]:
    """Ping the GPU hosts' agents and write who is online (Celery beat, check-gpu-hosts)."""
    return hosts_check().as_dict()


__all__ = ["agent_report_task", "apply_run_task", "check_hosts_task", "reap_stale_runs_task"]
