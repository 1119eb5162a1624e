"""Apply across two hosts, for real: this machine's stand-in project is the local host, and a
second stand-in project driven by a real agent (``manage.py run_agent``: a Celery worker on
its own queue, joined with a one-time token over HTTP) is host B. GPUs are the CDI stand-in
spec's; everything above the GPU runs for real: podman, podman-compose, Redis, Celery, the
agent's join and report, and PostgreSQL."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connection
from rest_framework.test import APIClient

from devices.models import Host
from devices.services import gpu_inventory_rescan
from orchestration import podman
from orchestration.executor import apply_run_execute
from orchestration.host_checks import hosts_check
from orchestration.selectors import reset_container_health_cache
from orchestration.services import apply_run_start, forget_probe
from orchestration.tests.agents import Agent, agent_env, celery_on
from orchestration.tests.containers import ComposeProject, new_project_name, standin_compose
from orchestration.tests.containers import podman as run_podman

pytestmark = [pytest.mark.containers, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
HOST_B = "gpu-box-b"
# Its third GPU is one the CDI stand-in spec (GPUs "0" and "1") cannot resolve: a container
# given it is created but never starts, as with a GPU that fell off the bus.
B_UUIDS = [f"GPU-bbbbbbbb-0000-0000-0000-00000000000{i}" for i in range(3)]
LOCAL = {"ai-llm": 0, "ai-yolo26": 0, "ai-florence": 0, "ai-clip": 0, "ai-enrichment": 1}


@pytest.fixture
def broker(settings: Any) -> Iterator[str]:
    """Redis as broker and result backend (the hosts answer through it), a database of
    these tests' own, emptied first."""
    url = os.environ.get("GPUCONFIG_TEST_HOSTS_REDIS_URL", "redis://127.0.0.1:6379/12")
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {url} ({exc}); start redis-server")
    client.flushdb()
    with celery_on(url, results=True):
        yield url


@pytest.fixture
def local_host(
    compose_project: ComposeProject,
    compose_command: tuple[str, ...],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ComposeProject]:
    if connection.vendor != "postgresql":
        pytest.skip("the agent's GPU Config is a live server on the shared PostgreSQL database")
    monkeypatch.setenv("CONTAINERS_CONF", compose_project.env["CONTAINERS_CONF"])
    settings.GPUCONFIG_COMPOSE_FILE = compose_project.base
    settings.GPUCONFIG_OUTPUT_DIR = compose_project.directory / "config"
    settings.GPUCONFIG_COMPOSE_PROJECT = compose_project.name
    settings.GPUCONFIG_COMPOSE_COMMAND = list(compose_command)
    settings.GPUCONFIG_HEALTH_TIMEOUT_SECONDS = 20
    settings.GPUCONFIG_COMPOSE_TIMEOUT_SECONDS = 60
    forget_probe()
    compose_project.start()
    gpu_inventory_rescan()
    yield compose_project
    forget_probe()


@pytest.fixture
def host_b(
    podman_env: dict[str, str],
    standin_image: str,
    cdi_spec: Path,
    compose_command: tuple[str, ...],
    tmp_path: Path,
) -> Iterator[ComposeProject]:
    """Host B's own compose project: it defines ai-clip only (the service both hosts run)."""
    folder = tmp_path / "host-b"
    folder.mkdir()
    project = ComposeProject(folder, new_project_name(), compose_command, podman_env)
    definition = standin_compose(standin_image)
    definition["services"] = {"ai-clip": definition["services"]["ai-clip"]}
    project.write_base(definition)
    project.start()
    try:
        yield project
    finally:
        project.remove()


@pytest.fixture
def agent_b(
    live_server: Any, broker: str, host_b: ComposeProject, staff_api: APIClient, tmp_path: Path
) -> Iterator[Agent]:
    """Host B added on GPU Config's API and its agent started with the one-time token."""
    gpus = [
        {"index": i, "uuid": B_UUIDS[i], "name": "NVIDIA L4", "vram_total_mb": 23034,
         "vram_used_mb": 300, "compute_capability": "8.9"}
        for i in range(3)
    ]  # fmt: skip
    folder = tmp_path / "agent-b"
    folder.mkdir()
    (folder / "gpus.json").write_text(json.dumps({"gpus": gpus}))
    env = agent_env(
        HOST_B,
        folder,
        url=live_server.url,
        broker=broker,
        DATABASE_URL="postgres://the-agent-has-no-database@127.0.0.1:1/none",
        CONTAINERS_CONF=host_b.env["CONTAINERS_CONF"],
        GPUCONFIG_SIMULATED_GPUS=str(folder / "gpus.json"),
        GPUCONFIG_COMPOSE_FILE=str(host_b.base),
        GPUCONFIG_OUTPUT_DIR=str(host_b.directory / "config"),
        GPUCONFIG_COMPOSE_PROJECT=host_b.name,
        GPUCONFIG_COMPOSE_COMMAND=",".join(host_b.compose_command),
        GPUCONFIG_HEALTH_TIMEOUT_SECONDS="20",
    )
    added = staff_api.post("/api/hosts", {"name": HOST_B}, format="json")
    assert added.status_code == 201, added.json()
    agent = Agent(HOST_B, folder, env)
    agent.start(join_token=added.json()["join_token"])
    yield agent
    agent.stop()


def _save(client: APIClient, placement: dict[str, int]) -> None:
    body = {
        "strategy": "manual",
        "assignments": [{"service": s, "gpu_index": g} for s, g in placement.items()],
    }
    answer = client.put(
        "/api/system/gpu-config", data=json.dumps(body), content_type="application/json"
    )
    assert answer.status_code == 200, answer.json()


def _apply(client: APIClient) -> dict[str, Any]:
    """Apply the newest version in this process (as ``manage.py apply_gpu_config`` does) and
    return the run as the status API shows it."""
    run = apply_run_start(user=None, enqueue=False)
    apply_run_execute(run.pk)
    return client.get("/api/system/gpu-config/status", {"run": str(run.pk)}).json()["run"]


def _containers(project: ComposeProject) -> dict[str, podman.ContainerState]:
    return podman.inspect_services(project.name, env=project.env)


def test_moves_drift_failures_and_a_dead_agent_across_two_hosts(
    local_host: ComposeProject,
    host_b: ComposeProject,
    agent_b: Agent,
    staff_api: APIClient,
    settings: Any,
) -> None:
    hosts = {h["name"]: h for h in staff_api.get("/api/hosts").json()}
    assert hosts[HOST_B]["state"] == "online"
    assert hosts[HOST_B]["gpus"] == [100, 101, 102]
    assert hosts[HOST_B]["services"] == ["ai-clip"]

    _save(staff_api, LOCAL)
    first = _apply(staff_api)
    assert first["status"] == "succeeded", first
    # ai-clip was started on both hosts before GPU Config placed it here: it now runs here
    # only (B stopped its copy), so no service runs twice.
    b_before = _containers(host_b)["ai-clip"]
    assert not b_before.running, "B's stray ai-clip was stopped"
    assert _containers(local_host)["ai-clip"].running

    # ai-clip moves from this host's GPU 0 to host B's GPU 1 (global 101).
    _save(staff_api, {**LOCAL, "ai-clip": 101})
    local_before = _containers(local_host)
    moved = _apply(staff_api)

    assert moved["status"] == "succeeded", json.dumps(moved, indent=1) + agent_b.output()[-3000:]
    steps = {s["service"]: s for s in moved["steps"]}
    assert set(steps) == {"ai-clip"}
    assert steps["ai-clip"]["message"] == f"running on host {HOST_B}"
    on_b = _containers(host_b)["ai-clip"]
    assert on_b.id != b_before.id, "host B recreated its ai-clip"
    assert on_b.running
    assert on_b.cdi_devices == ("nvidia.com/gpu=1",), "B's own index 1, not 101"
    assert on_b.env["STANDIN_GPU"] == "1"
    assert on_b.env["GPUCONFIG_GPU_UUID"] == B_UUIDS[1]
    here = _containers(local_host)
    assert not here["ai-clip"].running, "ai-clip stopped here once it ran on B"
    for name in ("ai-llm", "ai-yolo26", "ai-florence", "ai-enrichment"):
        assert here[name].id == local_before[name].id, f"{name} was recreated"
    commands = [c["argv"] for c in moved["commands"]]
    assert any(argv[0] == f"[{HOST_B}]" and "up" in argv for argv in commands), commands
    # The status shows ai-clip where it runs, from B's report (not its stopped container here).
    status = staff_api.get("/api/system/gpu-config/status").json()
    clip = status["containers"]["ai-clip"]
    assert (clip["host"], clip["state"], clip["gpu"], clip["drifted"]) == (
        HOST_B,
        "running",
        101,
        False,
    )
    assert clip["gpu_uuid"] == B_UUIDS[1]
    assert status["summary"] == "All services running as applied"

    # Someone runs a plain `up -d` on host B: ai-clip comes back without its GPU there. B's
    # next report shows the drift, and Apply repairs it on B.
    host_b.compose("up", "-d", "--force-recreate", "ai-clip")
    settings.GPUCONFIG_HOST_REPORT_SECONDS = 0
    reported = Host.objects.get(name=HOST_B).reported_at
    assert hosts_check().refreshed == [HOST_B]
    deadline = time.monotonic() + 30
    while Host.objects.get(name=HOST_B).reported_at == reported:
        assert time.monotonic() < deadline, agent_b.output()[-3000:]
        time.sleep(0.2)
    clip = staff_api.get("/api/system/gpu-config/status").json()["containers"]["ai-clip"]
    assert clip["drifted"], clip
    assert clip["gpu"] is None
    repaired = _apply(staff_api)
    assert repaired["status"] == "succeeded", repaired
    assert [s["service"] for s in repaired["steps"]] == ["ai-clip"]
    assert _containers(host_b)["ai-clip"].cdi_devices == ("nvidia.com/gpu=1",)
    assert not staff_api.get("/api/system/gpu-config/status").json()["containers"]["ai-clip"][
        "drifted"
    ]

    # Someone removes B's ai-clip container by hand: B's next report says it has none, the
    # status shows it missing on B (not "running"), and Apply creates it again there.
    run_podman("rm", "-f", _containers(host_b)["ai-clip"].id, env=host_b.env)
    reported = Host.objects.get(name=HOST_B).reported_at
    assert hosts_check().refreshed == [HOST_B]
    deadline = time.monotonic() + 30
    while Host.objects.get(name=HOST_B).reported_at == reported:
        assert time.monotonic() < deadline, agent_b.output()[-3000:]
        time.sleep(0.2)
    reset_container_health_cache()
    clip = staff_api.get("/api/system/gpu-config/status").json()["containers"]["ai-clip"]
    assert (clip["host"], clip["state"], clip["drifted"]) == (HOST_B, "missing", True), clip
    recreated = _apply(staff_api)
    assert recreated["status"] == "succeeded", recreated
    assert [s["service"] for s in recreated["steps"]] == ["ai-clip"]
    assert _containers(host_b)["ai-clip"].cdi_devices == ("nvidia.com/gpu=1",)

    # A step that fails on host B (its GPU 2, which CDI cannot resolve there) rolls back this
    # host as well: ai-enrichment, moved here first, goes back to GPU 1.
    _save(staff_api, {**LOCAL, "ai-clip": 102, "ai-enrichment": 0})
    before_failure = _containers(local_host)
    failed = _apply(staff_api)

    assert failed["status"] == "rolled_back", json.dumps(failed, indent=1)
    assert f"host {HOST_B} failed" in failed["error"]
    back = _containers(local_host)
    assert back["ai-enrichment"].id != before_failure["ai-enrichment"].id
    assert back["ai-enrichment"].cdi_devices == ("nvidia.com/gpu=1",)
    assert back["ai-enrichment"].running
    on_b_after = _containers(host_b)["ai-clip"]
    assert on_b_after.running
    assert on_b_after.cdi_devices == ("nvidia.com/gpu=1",), "B's ai-clip is back on its GPU 1"

    # Host B's agent dies (its heartbeat is still fresh: GPU Config does not know yet) and an
    # apply touches B: the run waits for B's answer at most compose + health timeouts + the
    # margin, then ends rolled back, naming the host; it never hangs.
    settings.GPUCONFIG_COMPOSE_TIMEOUT_SECONDS = 5
    settings.GPUCONFIG_HEALTH_TIMEOUT_SECONDS = 5
    settings.GPUCONFIG_HOST_ANSWER_MARGIN_SECONDS = 2
    agent_b.kill()
    clip_before = _containers(host_b)["ai-clip"]
    _save(staff_api, {**LOCAL, "ai-clip": 100})
    started = time.monotonic()
    lost = _apply(staff_api)
    waited = time.monotonic() - started
    print(f"apply with host B's agent dead: {lost['status']} after {waited:.1f} s")
    assert lost["status"] == "rolled_back", lost
    assert f"host {HOST_B} did not complete its part" in lost["error"]
    assert waited < 12 + 15
    # Back from the dead, B drops the stale part (it expired) instead of carrying it out, and
    # its report shows ai-clip still where the applied version has it.
    agent_b.start(join_token="")
    time.sleep(3)
    assert _containers(host_b)["ai-clip"].id == clip_before.id
    # (Celery logs an expired task as revoked.)
    assert "Discarding revoked task: agent.apply_slice" in agent_b.output(), agent_b.output()[
        -2000:
    ]
