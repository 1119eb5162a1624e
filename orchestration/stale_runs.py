"""Runs that no live worker moves forward: noticed early, ended within a bounded time.

A worker that dies (killed, out of memory, its host restarted) cannot end its own run, and the
Celery beat that reaps such runs lives in that same worker. So the web side does it as well:
every status read (the page polls it while a run is active, /health is polled by the stack's
health check) notices a silent worker from the run's heartbeat after
``WORKER_SILENT_SECONDS`` and ends the run (interrupted) after ``GPUCONFIG_STALE_RUN_SECONDS``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from orchestration.models import ApplyRun, RunStatus

logger = logging.getLogger(__name__)

# The executor beats every 2 s (executor.HEARTBEAT_SECONDS): five missed beats mean the
# worker has stopped answering, long before the run is ended.
WORKER_SILENT_SECONDS = 10.0


def worker_advice() -> str:
    """Where the worker is started, in the words of where this app runs."""
    if settings.GPUCONFIG_IN_CONTAINER:
        return "check the gpuconfig-worker container (podman-compose ps, podman logs)"
    return "bin/run starts one beside the web server; check .data/worker.log"


def stalled_run_notice(run: ApplyRun, now: datetime | None = None) -> str:
    """What the page says about an active run whose worker is silent, or ''."""
    if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.ROLLING_BACK):
        return ""
    now = now or timezone.now()
    if run.status == RunStatus.QUEUED:
        waited = (now - run.created_at).total_seconds()
        if waited < WORKER_SILENT_SECONDS:
            return ""
        return (
            f"No worker has picked up this run for {waited:.0f} s: is the Celery worker "
            f"running? ({worker_advice()}). The run ends by itself after "
            f"{settings.GPUCONFIG_STALE_RUN_SECONDS} s; nothing was changed."
        )
    beat = run.heartbeat_at or run.started_at or run.created_at
    silent = (now - beat).total_seconds()
    if silent < WORKER_SILENT_SECONDS:
        return ""
    return (
        f"The worker stopped answering {silent:.0f} s ago ({worker_advice()}). The run is "
        f"ended as interrupted after {settings.GPUCONFIG_STALE_RUN_SECONDS} s without an "
        "answer; containers may then be between versions."
    )


def apply_runs_reap_stale() -> list[Any]:
    """Mark runs that no live worker is moving forward as interrupted.

    A running run whose heartbeat is older than GPUCONFIG_STALE_RUN_SECONDS lost its worker
    (killed, machine restarted); a queued run that old was never picked up (no worker).
    """
    limit = timezone.now() - timedelta(seconds=settings.GPUCONFIG_STALE_RUN_SECONDS)
    seconds = settings.GPUCONFIG_STALE_RUN_SECONDS
    reaped = []
    # One query, answered from the partial index of active runs: cheap enough for every
    # status read.
    candidates = ApplyRun.objects.filter(
        Q(status__in=[RunStatus.RUNNING, RunStatus.ROLLING_BACK], heartbeat_at__lt=limit)
        | Q(status=RunStatus.QUEUED, created_at__lt=limit)
    ).only("pk", "status")
    for run in candidates:
        if run.status == RunStatus.QUEUED:
            error = (
                f"No worker picked up this run within {seconds} s: is the Celery worker "
                f"running ({worker_advice()})? Nothing was changed."
            )
        else:
            error = (
                f"The worker stopped reporting while the run was {run.status} (no heartbeat "
                f"for over {seconds} s). Containers may be between versions: check the "
                "status below, then Apply again or roll back."
            )
        updated = ApplyRun.objects.filter(pk=run.pk, status=run.status).update(
            status=RunStatus.INTERRUPTED, finished_at=timezone.now(), error=error
        )
        if updated:
            reaped.append(run.pk)
            logger.warning("apply run %s marked interrupted: %s", run.pk, error)
    return reaped


def reap_stale_runs_on_read() -> None:
    """``apply_runs_reap_stale`` from a read path (status reads, /health)."""
    apply_runs_reap_stale()
