"""Apply, rollback and status endpoints where no container has to start."""

from __future__ import annotations

import json
import shutil
import socket
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from devices.services import gpu_inventory_rescan
from gpuconfig.models import ConfigVersion
from orchestration.models import ApplyRun, RunStatus
from orchestration.services import forget_probe
from orchestration.tasks import reap_stale_runs_task

pytestmark = pytest.mark.django_db

APPLY = "/api/system/gpu-config/apply"
STATUS = "/api/system/gpu-config/status"


@pytest.fixture(autouse=True)
def _fresh_probe():
    forget_probe()
    yield
    forget_probe()


def _save(client, strategy="vram_based"):
    gpu_inventory_rescan()
    response = client.put(
        "/api/system/gpu-config",
        data=json.dumps({"strategy": strategy}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.json()


def _override(settings) -> Path:
    return Path(settings.GPUCONFIG_OUTPUT_DIR) / "docker-compose.gpu-override.yml"


def test_apply_without_podman_compose_is_refused_with_what_to_install(staff_api, settings):
    _save(staff_api)
    settings.GPUCONFIG_COMPOSE_COMMAND = ["/nonexistent/podman-compose"]

    response = staff_api.post(APPLY)

    assert response.status_code == 503
    error = response.json()["error"]
    assert "podman-compose not found" in error
    assert "pip install 'podman-compose>=1.4'" in error
    assert ApplyRun.objects.count() == 0
    assert not _override(settings).exists()


def test_apply_without_podman_on_path_is_refused(staff_api, settings, tmp_path, monkeypatch):
    _save(staff_api)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "podman-compose"
    fake.write_text("#!/bin/sh\necho 'podman-compose version 1.6.0'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))
    settings.GPUCONFIG_COMPOSE_COMMAND = [str(fake)]

    response = staff_api.post(APPLY)

    assert response.status_code == 503
    assert "podman not found" in response.json()["error"]
    assert ApplyRun.objects.count() == 0


@pytest.mark.containers  # needs a real podman on PATH: the version check comes after it
def test_an_old_podman_compose_is_refused(staff_api, settings, tmp_path, monkeypatch):
    _save(staff_api)
    fake = tmp_path / "podman-compose"
    fake.write_text("#!/bin/sh\necho 'podman-compose version: 1.0.3'\n")
    fake.chmod(0o755)
    settings.GPUCONFIG_COMPOSE_COMMAND = [str(fake)]
    if shutil.which("podman") is None:
        pytest.skip("podman not installed: apt-get install podman (the version check follows it)")

    response = staff_api.post(APPLY)

    assert response.status_code == 503
    assert "1.0.3" in response.json()["error"]


def test_a_base_file_that_gives_a_managed_service_devices_is_refused(staff_api, settings):
    _save(staff_api)
    compose = Path(settings.GPUCONFIG_COMPOSE_FILE)
    compose.write_text(
        # Right under the service's name, whatever its image line says.
        compose.read_text().replace(
            "\n  ai-clip:\n", "\n  ai-clip:\n    devices: [nvidia.com/gpu=0]\n", 1
        )
    )

    response = staff_api.post(APPLY)

    assert response.status_code == 503
    assert "already gives ai-clip devices of its own" in response.json()["error"]
    assert ApplyRun.objects.count() == 0
    assert not _override(settings).exists()


@pytest.mark.containers  # the probe that comes first needs a real podman on PATH
def test_apply_before_any_save_says_so(staff_api, settings, tmp_path):
    if shutil.which("podman") is None:
        pytest.skip("podman not installed: apt-get install podman (the probe comes first)")
    fake = tmp_path / "podman-compose"
    fake.write_text("#!/bin/sh\necho 'podman-compose version 1.6.0'\n")
    fake.chmod(0o755)
    settings.GPUCONFIG_COMPOSE_COMMAND = [str(fake)]

    response = staff_api.post(APPLY)

    assert response.status_code == 400
    assert response.json()["error"] == "Nothing to apply: save a configuration first."
    assert ApplyRun.objects.count() == 0


def test_non_staff_cannot_apply_or_roll_back(member_api, anon_api):
    assert member_api.post(APPLY).status_code == 403
    assert member_api.post("/api/system/gpu-config/rollback").status_code == 403
    assert anon_api.post(APPLY).status_code == 403
    assert anon_api.get(STATUS).status_code == 403
    assert ApplyRun.objects.count() == 0


def _run(status: str, **times) -> ApplyRun:
    version = ConfigVersion.objects.create(number=1, strategy="manual", assignments={})
    run = ApplyRun.objects.create(version=version, status=status)
    ApplyRun.objects.filter(pk=run.pk).update(**times)
    return run


def test_a_silent_worker_is_named_within_seconds_and_its_run_ended_by_a_status_read(
    member_api, settings
):
    settings.GPUCONFIG_STALE_RUN_SECONDS = 30
    quiet = timezone.now() - timedelta(seconds=12)
    run = _run(RunStatus.RUNNING, heartbeat_at=quiet, started_at=quiet)

    body = member_api.get(STATUS, {"run": str(run.pk)}).json()
    assert body["run"]["status"] == "running"
    assert body["run"]["worker_notice"].startswith("The worker stopped answering 12 s ago")

    # Past the limit, the next read ends the run: the worker's own beat died with it.
    ApplyRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=31))
    body = member_api.get(STATUS, {"run": str(run.pk)}).json()

    assert body["run"]["status"] == "interrupted"
    assert "stopped reporting" in body["run"]["error"]
    assert body["run"]["finished_at"] is not None
    assert body["run"]["worker_notice"] == ""


def test_health_ends_a_run_whose_worker_died(client, settings):
    settings.GPUCONFIG_STALE_RUN_SECONDS = 30
    old = timezone.now() - timedelta(seconds=31)
    run = _run(RunStatus.RUNNING, heartbeat_at=old, started_at=old)

    assert client.get("/health").status_code == 200
    assert ApplyRun.objects.get(pk=run.pk).status == RunStatus.INTERRUPTED


def test_a_running_run_with_a_fresh_heartbeat_is_left_alone(member_api, settings):
    settings.GPUCONFIG_STALE_RUN_SECONDS = 30
    run = _run(RunStatus.RUNNING, heartbeat_at=timezone.now())
    assert reap_stale_runs_task() == []
    body = member_api.get(STATUS, {"run": str(run.pk)}).json()
    assert body["run"]["status"] == "running"
    assert body["run"]["worker_notice"] == ""


def test_a_queued_run_no_worker_took_is_reported(member_api, settings):
    settings.GPUCONFIG_STALE_RUN_SECONDS = 30
    run = _run(RunStatus.QUEUED, created_at=timezone.now() - timedelta(minutes=5))
    reap_stale_runs_task()
    body = member_api.get(STATUS).json()
    assert body["run"]["id"] == str(run.pk)
    assert body["run"]["status"] == "interrupted"
    assert "is the Celery worker running" in body["run"]["error"]
    assert "bin/run starts one" in body["run"]["error"]


def test_status_rejects_a_bad_run_id_and_reports_an_unknown_one(member_api):
    assert member_api.get(STATUS, {"run": "nope"}).status_code == 400
    response = member_api.get(STATUS, {"run": "00000000-0000-0000-0000-000000000000"})
    assert response.status_code == 404


def test_status_with_no_runs_still_reports_the_containers(member_api):
    body = member_api.get(STATUS).json()
    assert body["run"] is None
    assert "summary" in body and "available" in body


def test_only_one_active_run_can_exist_in_the_database():
    from django.db import IntegrityError, transaction

    version = ConfigVersion.objects.create(number=1, strategy="manual", assignments={})
    ApplyRun.objects.create(version=version, status=RunStatus.RUNNING)
    with pytest.raises(IntegrityError), transaction.atomic():
        ApplyRun.objects.create(version=version, status=RunStatus.QUEUED)
    ApplyRun.objects.create(version=version, status=RunStatus.SUCCEEDED)


def test_health_reports_a_dead_broker_apart_and_stays_200(client):
    from config.celery import app as celery_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = f"redis://127.0.0.1:{closed}/0"
    celery_app.close()
    try:
        response = client.get("/health")
    finally:
        celery_app.conf.broker_url = previous
        celery_app.close()

    assert response.status_code == 200, "containers are not restarted for a broker outage"
    body = response.json()
    assert (body["status"], body["database"]) == ("ok", "ok")
    assert body["broker"].startswith("unavailable: ")
    assert body["worker"] == "unknown (no broker)"
