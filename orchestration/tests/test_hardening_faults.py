"""Faults an apply must survive (issue 12): a rollback whose run was already marked
interrupted, stale runs reaped by Celery beat rather than by reads, a failing podman probe."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from config.celery import app as celery_app
from gpuconfig.domain import StrategyName
from gpuconfig.services import gpu_config_save
from orchestration import executor, podman, probe
from orchestration.models import ApplyRun, RunKind, RunStatus
from orchestration.services import forget_probe

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_probe() -> Any:
    forget_probe()
    yield
    forget_probe()


def test_a_failed_run_already_marked_interrupted_does_not_roll_back(db: Any) -> None:
    from devices.services import gpu_inventory_rescan

    gpu_inventory_rescan()
    version = gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED).version
    run = ApplyRun.objects.create(kind=RunKind.APPLY, version=version, status=RunStatus.RUNNING)
    override = executor.override_path()
    override.parent.mkdir(parents=True, exist_ok=True)
    override.write_text("# the override this run replaced\n")
    said: list[str] = []
    context = executor._context(run.pk, said.append)
    # Meanwhile the run looked dead and was marked interrupted, and a new Apply wrote its own.
    ApplyRun.objects.filter(pk=run.pk).update(status=RunStatus.INTERRUPTED)
    override.write_text("# the next apply's override\n")

    outcome = executor.roll_back(context, "podman-compose exited 1")

    assert outcome == RunStatus.INTERRUPTED
    assert override.read_text() == "# the next apply's override\n", "the loser touched it"
    run.refresh_from_db()
    assert run.status == RunStatus.INTERRUPTED
    assert run.error == ""
    assert said == [
        "failed: podman-compose exited 1; the run is interrupted now, so nothing is rolled back"
    ]


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


def test_a_failing_podman_probe_is_remembered_briefly(tmp_path, settings, monkeypatch) -> None:
    # A compose command that fails slowly and counts how often it is started.
    calls = tmp_path / "calls"
    fake = tmp_path / "podman-compose"
    fake.write_text(f"#!/bin/sh\necho started >> {calls}\nsleep 0.3\nexit 1\n")
    fake.chmod(0o755)
    settings.GPUCONFIG_COMPOSE_COMMAND = [str(fake)]
    errors: list[str] = []

    def read() -> None:
        try:
            probe.compose_tool()
        except podman.ComposeUnavailable as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=read) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    read()

    assert len(errors) == 21
    assert len(set(errors)) == 1 and "did not report a podman-compose version" in errors[0]
    assert calls.read_text().count("started") == 1, "one probe for all of them"

    monkeypatch.setattr(probe, "PROBE_FAILURE_CACHE_SECONDS", 0.0)
    read()
    assert calls.read_text().count("started") == 2, "after the interval, podman is asked again"
