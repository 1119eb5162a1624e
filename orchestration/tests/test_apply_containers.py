"""Apply & Restart end to end: real podman containers, a CDI spec standing in for the GPUs,
a real Celery worker on the real Redis, and PostgreSQL shared between this test and the worker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connection
from rest_framework.test import APIClient

from config.celery import app as celery_app
from devices.services import gpu_inventory_rescan
from gpuconfig.models import ConfigVersion
from orchestration import podman
from orchestration import services as orchestration_services
from orchestration.models import ApplyCommand, ApplyRun
from orchestration.selectors import reset_container_health_cache
from orchestration.services import forget_probe
from orchestration.tests.containers import ComposeProject, standin_compose
from orchestration.worker_process import CeleryWorker, start_worker

pytestmark = [pytest.mark.containers, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_UUID = {
    0: "GPU-00000000-0000-0000-0000-000000000000",
    1: "GPU-00000000-0000-0000-0000-000000000001",
}
DESIGN = {
    "ai-llm": 0,
    "ai-yolo26": 0,
    "ai-florence": 0,
    "ai-clip": 0,
    "ai-enrichment": 1,
}
TEST_QUEUE = f"gpuconfig-test-{uuid.uuid4().hex[:12]}"
FINAL = {"succeeded", "rolled_back", "rollback_failed", "failed", "interrupted"}


def _body(assignments: dict[str, int]) -> dict[str, Any]:
    return {
        "strategy": "manual",
        "assignments": [{"service": s, "gpu_index": g} for s, g in assignments.items()],
    }


@pytest.fixture
def broker_url() -> Iterator[str]:
    url = os.environ.get("GPUCONFIG_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {url} ({exc}); start redis-server")
    previous = celery_app.conf.broker_url, celery_app.conf.task_default_queue
    celery_app.conf.broker_url = url
    # A queue of this test's own: a leftover task, or another test session on the same
    # Redis, can never reach this test's worker.
    celery_app.conf.task_default_queue = TEST_QUEUE
    celery_app.close()  # drop pooled connections to the old broker
    yield url
    celery_app.conf.broker_url, celery_app.conf.task_default_queue = previous
    celery_app.close()


@pytest.fixture
def stand(
    compose_project: ComposeProject,
    compose_command: tuple[str, ...],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ComposeProject]:
    """The app pointed at a running stand-in project, as an operator's host would be."""
    if connection.vendor != "postgresql":
        pytest.skip(
            "apply tests share the database with a separate worker process, which an "
            "in-memory SQLite test database cannot do; bin/test runs them on PostgreSQL"
        )
    monkeypatch.setenv("CONTAINERS_CONF", compose_project.env["CONTAINERS_CONF"])
    settings.GPUCONFIG_COMPOSE_FILE = compose_project.base
    settings.GPUCONFIG_OUTPUT_DIR = compose_project.directory / "config"
    settings.GPUCONFIG_COMPOSE_PROJECT = compose_project.name
    settings.GPUCONFIG_COMPOSE_COMMAND = list(compose_command)
    settings.GPUCONFIG_HEALTH_TIMEOUT_SECONDS = 20
    forget_probe()
    compose_project.start()
    gpu_inventory_rescan()
    yield compose_project
    forget_probe()


def _worker_env(settings: Any, broker_url: str, **extra: str) -> dict[str, str]:
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return {
        **os.environ,
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": broker_url,
        "GPUCONFIG_COMPOSE_FILE": str(settings.GPUCONFIG_COMPOSE_FILE),
        "GPUCONFIG_OUTPUT_DIR": str(settings.GPUCONFIG_OUTPUT_DIR),
        "GPUCONFIG_COMPOSE_PROJECT": settings.GPUCONFIG_COMPOSE_PROJECT,
        "GPUCONFIG_COMPOSE_COMMAND": ",".join(settings.GPUCONFIG_COMPOSE_COMMAND),
        "GPUCONFIG_HEALTH_TIMEOUT_SECONDS": str(settings.GPUCONFIG_HEALTH_TIMEOUT_SECONDS),
        "GPUCONFIG_STALE_RUN_SECONDS": str(settings.GPUCONFIG_STALE_RUN_SECONDS),
        "GPUCONFIG_DATA_DIR": str(Path(settings.GPUCONFIG_OUTPUT_DIR).parent / ".data"),
        **extra,
    }


@pytest.fixture
def worker(stand, settings, broker_url, tmp_path) -> Iterator[CeleryWorker]:
    started = start_worker(
        _worker_env(settings, broker_url), tmp_path / "worker.log", queue=TEST_QUEUE
    )
    yield started
    started.stop()


def _put(client: APIClient, body: dict[str, Any]) -> None:
    response = client.put(
        "/api/system/gpu-config", data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 200, response.json()


def _wait(client: APIClient, run_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get("/api/system/gpu-config/status", {"run": run_id}).json()
        if body["run"]["status"] in FINAL:
            return body
        time.sleep(0.25)
    raise AssertionError(f"run {run_id} did not finish: {body}")


def _apply(client: APIClient, worker: CeleryWorker) -> dict[str, Any]:
    response = client.post("/api/system/gpu-config/apply")
    assert response.status_code == 202, response.json()
    body = _wait(client, response.json()["run_id"])
    assert body["run"]["status"] != "interrupted", worker.output()[-3000:]
    return body


def _containers(project: ComposeProject) -> dict[str, podman.ContainerState]:
    return podman.inspect_services(project.name, env=project.env)


def _steps(body: dict[str, Any]) -> dict[str, str]:
    return {s["service"]: s["status"] for s in body["run"]["steps"]}


def test_apply_moves_a_service_and_recreates_only_what_changed(stand, worker, staff_api):
    _put(staff_api, _body(DESIGN))
    first = _apply(staff_api, worker)
    assert first["run"]["status"] == "succeeded", first["run"]
    # Nothing applied before: every managed service gets its GPU.
    assert set(_steps(first)) == set(DESIGN)
    assert set(_steps(first).values()) == {"healthy"}
    assert first["summary"] == "All services running as applied"
    before = _containers(stand)
    zoo = before["ai-enrichment"]
    assert zoo.cdi_devices == ("nvidia.com/gpu=1",)
    assert zoo.env["STANDIN_GPU"] == "1", "the CDI spec really resolved GPU 1"
    assert zoo.env["VRAM_BUDGET_GB"] == "3.4"
    assert zoo.env["GPUCONFIG_GPU_UUID"] == REFERENCE_UUID[1]

    _put(staff_api, _body({**DESIGN, "ai-clip": 1}))
    second = _apply(staff_api, worker)

    assert second["run"]["status"] == "succeeded", second["run"]
    # CLIP moves; the zoo stays but now shares the A400, so its budget shrinks to 2.3 GiB
    # (4094 - 1200 - 512 = 2382 MiB; alone there it had 3.4 GiB of 3582 MiB).
    assert _steps(second) == {"ai-clip": "healthy", "ai-enrichment": "healthy"}
    after = _containers(stand)
    assert after["ai-clip"].cdi_devices == ("nvidia.com/gpu=1",)
    assert after["ai-clip"].env["STANDIN_GPU"] == "1"
    assert after["ai-clip"].env["GPUCONFIG_GPU_UUID"] == REFERENCE_UUID[1]
    assert after["ai-enrichment"].env["VRAM_BUDGET_GB"] == "2.3"
    for unchanged in ("ai-llm", "ai-yolo26", "ai-florence"):
        assert after[unchanged].id == before[unchanged].id, f"{unchanged} was recreated"
    override = (Path(stand.directory) / "config" / "docker-compose.gpu-override.yml").read_text()
    assert "configuration version 2" in override
    assert second["containers"]["ai-clip"]["gpu"] == 1

    third = _apply(staff_api, worker)
    assert third["run"]["status"] == "succeeded"
    assert third["run"]["steps"] == [], "nothing changed, nothing recreated"
    assert {n: c.id for n, c in _containers(stand).items()} == {n: c.id for n, c in after.items()}


def _status(client: APIClient) -> dict[str, Any]:
    reset_container_health_cache()  # what a user sees after the shared read's interval
    return client.get("/api/system/gpu-config/status").json()


def test_down_and_up_without_the_override_shows_drift_and_apply_repairs_it(
    stand, worker, staff_api
):
    _put(staff_api, _body(DESIGN))
    assert _apply(staff_api, worker)["run"]["status"] == "succeeded"

    # What a reboot or a colleague does: the stack's own command, without the override.
    stand.compose("down", "-t", "0")
    stand.compose("up", "-d")
    status = _status(staff_api)

    assert set(status["drifted"]) == set(DESIGN)
    llm = status["containers"]["ai-llm"]
    assert (llm["state"], llm["gpu"], llm["planned_gpu"], llm["drift"]) == (
        "running",
        None,
        0,
        "no_device",
    )
    assert "runs without any GPU device" in llm["drift_reason"]
    assert "All services running" not in status["summary"]
    assert "ai-llm drifted: runs without any GPU device" in status["summary"]
    gpus = staff_api.get("/api/system/gpus").json()
    assert set(gpus["drifted"]) == set(DESIGN)

    # The same Apply repairs it, although the saved version did not change.
    repaired = _apply(staff_api, worker)

    assert repaired["run"]["status"] == "succeeded", repaired["run"]
    assert set(_steps(repaired)) == set(DESIGN)
    assert repaired["drifted"] == []
    assert repaired["summary"] == "All services running as applied"
    containers = _containers(stand)
    assert containers["ai-enrichment"].cdi_devices == ("nvidia.com/gpu=1",)
    assert containers["ai-llm"].cdi_devices == ("nvidia.com/gpu=0",)


def test_a_removed_container_is_drift_and_apply_recreates_only_it(stand, worker, staff_api):
    _put(staff_api, _body(DESIGN))
    assert _apply(staff_api, worker)["run"]["status"] == "succeeded"
    before = _containers(stand)
    podman_rm = ["podman", "rm", "-f", "-t", "0", before["ai-clip"].id]
    subprocess.run(podman_rm, env=dict(stand.env), check=True, capture_output=True)

    status = _status(staff_api)
    assert status["drifted"] == ["ai-clip"]
    assert status["containers"]["ai-clip"]["state"] == "missing"
    assert status["containers"]["ai-clip"]["drift_reason"] == "has no container"

    repaired = _apply(staff_api, worker)

    assert repaired["run"]["status"] == "succeeded", repaired["run"]
    assert _steps(repaired) == {"ai-clip": "healthy"}
    after = _containers(stand)
    assert after["ai-clip"].cdi_devices == ("nvidia.com/gpu=0",)
    for other in ("ai-llm", "ai-yolo26", "ai-florence", "ai-enrichment"):
        assert after[other].id == before[other].id, f"{other} was recreated"


def test_apply_with_the_broker_down_is_refused_before_a_run_exists(stand, staff_api):
    # Redis stopped: nothing listens where the broker should be (a closed local port, so
    # that the Redis other tests share keeps running).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = f"redis://127.0.0.1:{closed}/0"
    celery_app.close()
    try:
        _put(staff_api, _body(DESIGN))
        response = staff_api.post("/api/system/gpu-config/apply")
    finally:
        celery_app.conf.broker_url = previous
        celery_app.close()

    assert response.status_code == 503
    assert response.json()["error"].startswith("Cannot apply: the task queue (Redis at redis://")
    assert "Start Redis" in response.json()["error"]
    assert ApplyRun.objects.count() == 0
    # Nothing is left behind to block the next Apply.
    assert staff_api.get("/api/system/gpu-config/status").json()["run"] is None


def test_an_apply_racing_a_rollback_gets_one_202_and_one_409(stand, worker, staff_api, staff_user):
    _put(staff_api, _body(DESIGN))
    assert _apply(staff_api, worker)["run"]["status"] == "succeeded"
    _put(staff_api, _body({**DESIGN, "ai-florence": 1}))
    assert _apply(staff_api, worker)["run"]["status"] == "succeeded"
    versions_before = ConfigVersion.objects.count()
    codes: dict[str, int] = {}
    barrier = threading.Barrier(2)

    def post(action: str) -> None:
        client = APIClient()
        client.force_login(staff_user)
        barrier.wait()
        codes[action] = client.post(f"/api/system/gpu-config/{action}").status_code
        connection.close()

    threads = [threading.Thread(target=post, args=(a,)) for a in ("apply", "rollback")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert sorted(codes.values()) == [202, 409], codes
    run = ApplyRun.objects.filter(status__in=["queued", "running"]).get()
    assert _wait(staff_api, str(run.pk))["run"]["status"] == "succeeded"
    if codes["rollback"] == 202:
        # The rollback won: it stays in force (the apply did not re-run what it undid).
        assert ConfigVersion.objects.count() == versions_before + 1
        assert _containers(stand)["ai-florence"].cdi_devices == ("nvidia.com/gpu=0",)
    else:
        assert ConfigVersion.objects.count() == versions_before
        assert _containers(stand)["ai-florence"].cdi_devices == ("nvidia.com/gpu=1",)


ABSENT_IMAGE = "localhost/gpuconfig-absent:test"


def _clip_image_absent(stand: ComposeProject, standin_image: str) -> None:
    """The running project's base file now names an image podman does not have for CLIP."""
    definition = standin_compose(standin_image)
    definition["services"]["ai-clip"]["image"] = ABSENT_IMAGE
    stand.write_base(definition)


def test_an_image_missing_from_podman_is_refused_before_anything_is_written(
    stand, staff_api, standin_image
):
    _clip_image_absent(stand, standin_image)
    before = {n: c.id for n, c in _containers(stand).items()}
    _put(staff_api, _body(DESIGN))

    response = staff_api.post("/api/system/gpu-config/apply")

    assert response.status_code == 503, response.json()
    assert (
        f"the image {ABSENT_IMAGE} of ai-clip is not in podman's store: build or pull it, "
        "then apply again" in str(response.json())
    )
    assert not ApplyRun.objects.exists(), "no run was started"
    assert not (Path(stand.directory) / "config" / "docker-compose.gpu-override.yml").exists()
    assert {n: c.id for n, c in _containers(stand).items()} == before, "no container touched"


def test_a_failed_first_apply_ends_failed_without_a_rollback(
    stand, worker, staff_api, standin_image, monkeypatch
):
    # The image disappears between the check and the run (or the check is wrong): the first
    # apply fails in the worker, with no applied version to go back to.
    _clip_image_absent(stand, standin_image)
    monkeypatch.setattr(orchestration_services, "_check_images", lambda podman_path: None)
    _put(staff_api, _body(DESIGN))

    body = _apply(staff_api, worker)

    run = body["run"]
    assert run["status"] == "failed", run
    first_line = run["error"].splitlines()[0]
    assert first_line.startswith("Error") and ABSENT_IMAGE in first_line, run["error"]
    assert (
        "nothing was applied before, so there was nothing to roll back to" in run["error"].lower()
    )
    assert "ROLLBACK" not in run["error"]
    assert ApplyCommand.objects.filter(run_id=run["id"]).count() == 1, "no rollback command"
    assert not (Path(stand.directory) / "config" / "docker-compose.gpu-override.yml").exists()
    assert _steps(body)["ai-clip"] == "failed"
    assert _containers(stand)["ai-llm"].running, "what came up is left running"


def test_a_gpu_missing_from_the_cdi_spec_fails_and_rolls_back(
    stand, worker, staff_api, settings, tmp_path
):
    three = tmp_path / "three-gpus.json"
    reference = json.loads((ROOT / "devices/simulated/reference-gpus.json").read_text())
    extra = {**reference["gpus"][1], "index": 2, "uuid": "GPU-00000000-0000-0000-0000-000000000002"}
    three.write_text(json.dumps({"gpus": [*reference["gpus"], extra]}))
    settings.GPUCONFIG_SIMULATED_GPUS = three
    gpu_inventory_rescan()
    _put(staff_api, _body(DESIGN))
    assert _apply(staff_api, worker)["run"]["status"] == "succeeded"
    before = _containers(stand)

    _put(staff_api, _body({**DESIGN, "ai-clip": 2}))
    body = _apply(staff_api, worker)

    run = body["run"]
    assert run["status"] == "rolled_back", run
    assert "ai-clip" in run["error"]
    assert "unresolvable CDI devices nvidia.com/gpu=2" in run["output"]
    assert _steps(body) == {"ai-clip": "rolled_back"}
    clip = _containers(stand)["ai-clip"]
    assert clip.running
    assert clip.cdi_devices == ("nvidia.com/gpu=0",), "back on its previous GPU"
    # GPU 2 has room for a second copy, so CLIP hands over (issue 19): the copy is refused the
    # device, and the old container, never stopped, is the one still running.
    assert clip.id == before["ai-clip"].id
    assert _containers(stand)["ai-llm"].id == before["ai-llm"].id
    override = (Path(stand.directory) / "config" / "docker-compose.gpu-override.yml").read_text()
    assert "configuration version 1" in override, "the previous override is restored"


def test_a_failing_health_check_rolls_back(stand, worker, staff_api, standin_image):
    # CLIP's health check fails whenever it runs on GPU 1 ("$$": compose interpolates "$").
    stand.remove()
    stand.write_base(
        standin_compose(
            standin_image,
            healthchecks={
                "ai-clip": [
                    "CMD",
                    "/bin/busybox",
                    "sh",
                    "-c",
                    'test "$$GPUCONFIG_GPU_INDEX" != 1',
                ]
            },
        )
    )
    stand.start()
    _put(staff_api, _body(DESIGN))
    assert _apply(staff_api, worker)["run"]["status"] == "succeeded"

    _put(staff_api, _body({**DESIGN, "ai-clip": 1}))
    body = _apply(staff_api, worker)

    assert body["run"]["status"] == "rolled_back", body["run"]
    assert "health check failed" in body["run"]["error"]
    step = body["run"]["steps"][0]
    assert (step["service"], step["status"]) == ("ai-clip", "rolled_back")
    assert "health check failed" in step["message"]
    clip = _containers(stand)["ai-clip"]
    assert clip.cdi_devices == ("nvidia.com/gpu=0",)
    assert podman.run_healthcheck(clip.id, timeout_s=20, env=stand.env) is True


def test_a_worker_killed_mid_run_is_named_and_its_run_ended_by_status_reads(
    stand, staff_api, settings, broker_url, tmp_path
):
    # A compose command that hangs in `up`, so the run is surely mid-way when the worker dies.
    real = settings.GPUCONFIG_COMPOSE_COMMAND[0]
    slow = tmp_path / "slow-podman-compose"
    slow.write_text(
        f'#!/bin/sh\nfor a in "$@"; do [ "$a" = up ] && sleep 90; done\nexec {real} "$@"\n'
    )
    slow.chmod(0o755)
    settings.GPUCONFIG_COMPOSE_COMMAND = [str(slow)]
    settings.GPUCONFIG_STALE_RUN_SECONDS = 20
    forget_probe()
    worker = start_worker(
        _worker_env(settings, broker_url), tmp_path / "worker.log", queue=TEST_QUEUE
    )
    notice_after = ended_after = None
    try:
        _put(staff_api, _body(DESIGN))
        run_id = staff_api.post("/api/system/gpu-config/apply").json()["run_id"]
        deadline = time.monotonic() + 60
        while ApplyRun.objects.get(pk=run_id).status != "running":
            assert time.monotonic() < deadline, worker.output()[-2000:]
            time.sleep(0.2)
        time.sleep(1)
        worker.kill()
        killed = time.monotonic()

        first = staff_api.get("/api/system/gpu-config/status").json()["run"]
        assert (first["status"], first["worker_notice"]) == ("running", "")
        # Nothing but status reads from here: no beat, no Apply pressed.
        while time.monotonic() - killed < 40:
            run = staff_api.get("/api/system/gpu-config/status").json()["run"]
            if notice_after is None and run["worker_notice"]:
                notice_after = time.monotonic() - killed
                assert run["worker_notice"].startswith("The worker stopped answering")
            if run["status"] == "interrupted":
                ended_after = time.monotonic() - killed
                break
            time.sleep(0.5)
    finally:
        worker.kill()
        # compose runs in its own process group (so a timeout can kill all of it), which
        # outlives the worker: stop it, or it would create containers after the test.
        _kill_processes_running(slow)

    print(f"worker silence named after {notice_after} s, run ended after {ended_after} s")
    assert notice_after is not None and notice_after <= 10 + 2 + 1
    assert ended_after is not None and ended_after <= 20 + 2 + 1
    assert "stopped reporting" in run["error"]
    # The interrupted run no longer blocks the next apply.
    settings.GPUCONFIG_COMPOSE_COMMAND = [real]
    forget_probe()
    assert staff_api.post("/api/system/gpu-config/apply").status_code == 202


def _kill_processes_running(script: Path) -> None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if str(script).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def test_two_applies_at_once_get_one_409(stand, worker, staff_api, staff_user):
    _put(staff_api, _body(DESIGN))
    codes: list[int] = []
    barrier = threading.Barrier(2)

    def post() -> None:
        client = APIClient()
        client.force_login(staff_user)
        barrier.wait()
        codes.append(client.post("/api/system/gpu-config/apply").status_code)
        connection.close()

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert sorted(codes) == [202, 409]
    run = ApplyRun.objects.get()
    assert _wait(staff_api, str(run.pk))["run"]["status"] == "succeeded"


def test_manual_rollback_returns_to_the_previous_applied_version(stand, worker, staff_api):
    _put(staff_api, _body(DESIGN))
    assert _apply(staff_api, worker)["run"]["status"] == "succeeded"
    _put(staff_api, _body({**DESIGN, "ai-florence": 1}))
    assert _apply(staff_api, worker)["run"]["status"] == "succeeded"
    assert _containers(stand)["ai-florence"].cdi_devices == ("nvidia.com/gpu=1",)

    response = staff_api.post("/api/system/gpu-config/rollback")
    assert response.status_code == 202, response.json()
    body = _wait(staff_api, response.json()["run_id"])

    assert body["run"]["status"] == "succeeded", body["run"]
    assert body["run"]["kind"] == "rollback"
    assert _containers(stand)["ai-florence"].cdi_devices == ("nvidia.com/gpu=0",)
    # The rollback is a new saved version, so the page, the files and the containers agree.
    config = staff_api.get("/api/system/gpu-config").json()
    assert config["version"] == 3
    assert {a["service"]: a["gpu_index"] for a in config["assignments"]}["ai-florence"] == 0


def test_the_command_line_apply_prints_progress(stand, staff_api):
    from io import StringIO

    from django.core.management import call_command

    _put(staff_api, _body(DESIGN))
    out = StringIO()
    call_command("apply_gpu_config", stdout=out)
    text = out.getvalue()
    assert "services to recreate: ai-clip, ai-enrichment, ai-florence, ai-llm, ai-yolo26" in text
    assert "ai-enrichment: healthy" in text
    assert "succeeded" in text
    assert _containers(stand)["ai-enrichment"].cdi_devices == ("nvidia.com/gpu=1",)
