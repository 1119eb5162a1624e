"""Stale runs are reaped by Celery beat, not by reads (issue 12): the periodic task is in the
beat schedule, and every way of starting the worker runs beat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from config.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]


# Loading Celery's task modules runs Django's system checks, which ask the database on
# SQLite: the mark the module had before the tests moved here (test_hardening_faults).
@pytest.mark.django_db
def test_stale_runs_are_reaped_by_a_periodic_task_in_the_beat_schedule() -> None:
    celery_app.loader.import_default_modules()
    schedule: dict[str, Any] = django_settings.CELERY_BEAT_SCHEDULE["reap-stale-apply-runs"]
    assert schedule["task"] == "orchestration.reap_stale_runs"
    assert schedule["task"] in celery_app.tasks
    assert schedule["schedule"] <= django_settings.GPUCONFIG_STALE_RUN_SECONDS


def test_bin_run_and_the_production_worker_run_celery_beat() -> None:
    run_script = (ROOT / "bin" / "run").read_text()
    entrypoint = (ROOT / "deploy" / "entrypoint.sh").read_text()
    assert "celery -A config worker -B " in run_script
    assert "celery -A config worker -B " in entrypoint
