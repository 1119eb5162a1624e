"""Measured VRAM end to end with real containers: only the GPU itself is faked.

The five stand-in services run as real podman containers of a real compose project; the
faked NVML reports a real container's host PID (from ``podman inspect``) holding memory on
GPU 1. Everything between (the sampler, /proc/<pid>/cgroup, ``podman ps`` and the compose
labels, the API, the page) runs for real.
"""

from __future__ import annotations

import os
import re
from html import unescape
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.test import Client
from django.urls import reverse

from devices.attribution import HOST_PID_NAMESPACE, container_id_from_cgroup
from devices.services import reset_sampler
from orchestration.tests.containers import ComposeProject, podman

if TYPE_CHECKING:
    from devices.tests.conftest import FakeNvml

pytestmark = [pytest.mark.containers, pytest.mark.django_db]

MIB = 1024**2
CLIP_BYTES = 1500 * MIB  # over ai-clip's 1200 MiB estimate by more than the 10% margin
HOST_BYTES = 300 * MIB


def _host_pid(container: str, env: dict[str, str]) -> int:
    return int(podman("inspect", "--format", "{{.State.Pid}}", container, env=env).stdout.strip())


def _service_container(project: ComposeProject, service: str) -> str:
    listed = podman(
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        f"label=io.podman.compose.project={project.name}",
        "--filter",
        f"label=io.podman.compose.service={service}",
        env=project.env,
    ).stdout.split()
    assert len(listed) == 1, f"expected one {service} container, got {listed}"
    return listed[0]


@pytest.fixture
def running_project(
    compose_project: ComposeProject, settings, monkeypatch: pytest.MonkeyPatch
) -> ComposeProject:
    if os.readlink("/proc/self/ns/pid") != HOST_PID_NAMESPACE:
        pytest.skip(
            "these tests must run in the host's PID namespace to read container PIDs "
            "(they run inside a container here)"
        )
    compose_project.start()
    settings.GPUCONFIG_SIMULATED_GPUS = None  # the faked NVML is the source
    settings.GPUCONFIG_COMPOSE_FILE = compose_project.base
    settings.GPUCONFIG_COMPOSE_PROJECT = compose_project.name
    # The app's own podman calls use its environment, as in production.
    monkeypatch.setenv("CONTAINERS_CONF", compose_project.env["CONTAINERS_CONF"])
    reset_sampler()
    return compose_project


def test_a_real_containers_gpu_memory_is_its_services_on_the_right_gpu(
    running_project: ComposeProject,
    fake_nvml: FakeNvml,
    member_user,
    standin_image: str,
) -> None:
    env = dict(running_project.env)
    clip_id = _service_container(running_project, "ai-clip")
    clip_pid = _host_pid(clip_id, env)
    # Both cgroup layouts of this VM name the container: the v1 hierarchies and the v2 line.
    cgroup = Path(f"/proc/{clip_pid}/cgroup").read_text()
    assert container_id_from_cgroup(cgroup) == clip_id
    v1_lines = [line for line in cgroup.splitlines() if not line.startswith("0::")]
    v2_lines = [line for line in cgroup.splitlines() if line.startswith("0::")]
    assert container_id_from_cgroup("\n".join(v1_lines)) == clip_id
    assert container_id_from_cgroup("\n".join(v2_lines)) == clip_id

    # A container of no compose project at all: its memory is outside GPU Config.
    stray = podman(
        "run", "-d", "--rm", "--stop-timeout", "1", standin_image, "sleep", "60", env=env
    ).stdout.strip()
    try:
        stray_pid = _host_pid(stray, env)
        a5500, a400 = fake_nvml.add_reference_box()
        a5500.reserved_mib = a400.reserved_mib = 200
        a400.compute_processes = [(clip_pid, CLIP_BYTES), (os.getpid(), HOST_BYTES)]
        a5500.compute_processes = [(stray_pid, 100 * MIB)]

        client = Client()
        client.force_login(member_user)
        body = client.get("/api/system/gpus").json()
        html = unescape(client.get(reverse("pages:settings")).content.decode())
    finally:
        podman("rm", "-f", "-t", "0", stray, env=env, check=False)

    gpu0, gpu1 = body["gpus"]
    assert body["source"] == "nvml"
    assert gpu1["vram_reserved_mb"] == 200
    use = gpu1["memory_use"]
    assert use["measured"] is True
    assert use["services"] == [
        {"service": "ai-clip", "measured_mb": 1500, "estimate_mb": 1200, "over_estimate": True}
    ]
    # This test's own process holds memory too, on the host: outside GPU Config.
    assert use["outside_gpu_config_mb"] == 300
    assert use["outside_processes"] == [
        {"pid": os.getpid(), "used_mb": 300, "owner": "host process"}
    ]
    assert use["unattributed_mb"] == 0
    # The stray container is named, and counted outside on GPU 0, not as a service.
    assert gpu0["memory_use"]["services"] == []
    assert gpu0["memory_use"]["outside_gpu_config_mb"] == 100
    (stray_entry,) = gpu0["memory_use"]["outside_processes"]
    assert stray_entry["owner"].startswith("container ")
    assert stray_entry["owner"].endswith("(no compose service)")
    assert [w["code"] for w in body["warnings"]] == ["service_over_estimate"]
    assert body["warnings"][0]["service"] == "ai-clip"
    assert body["warnings"][0]["gpu_index"] == 1

    # The page: GPU 1's card lists ai-clip's 1.5 GiB beside its ~1.2 GiB estimate, and the
    # 300 MiB outside GPU Config; the assignment table shows the same measurement.
    card = re.search(r'id="gpu-1-memory".*?</div>', html, re.S)
    assert card is not None
    text = " ".join(re.sub(r"<[^>]+>", " ", card.group(0)).split())
    assert "ai-clip 1.5 GiB ~1.2 GiB Over estimate" in text
    assert "Outside GPU Config 300 MiB" in text
    assert f"PID {os.getpid()} (host process, 300 MiB)" in text
    row = re.search(r'<tr id="row-ai-clip".*?</tr>', html, re.S)
    assert row is not None
    assert "1.5 GiB on GPU 1" in " ".join(re.sub(r"<[^>]+>", " ", row.group(0)).split())
    gpu0_card = re.search(r'id="gpu-0-memory".*?</div>', html, re.S)
    assert gpu0_card is not None
    assert "Outside GPU Config 100 MiB" in " ".join(
        re.sub(r"<[^>]+>", " ", gpu0_card.group(0)).split()
    )


def test_a_pid_that_proc_does_not_show_is_attribution_unavailable_never_a_service(
    running_project: ComposeProject, fake_nvml: FakeNvml, member_user
) -> None:
    clip_pid = _host_pid(_service_container(running_project, "ai-clip"), dict(running_project.env))
    gone_pid = _unused_pid()
    _, a400 = fake_nvml.add_reference_box()
    a400.compute_processes = [(clip_pid, CLIP_BYTES), (gone_pid, 700 * MIB)]

    client = Client()
    client.force_login(member_user)
    use = client.get("/api/system/gpus").json()["gpus"][1]["memory_use"]

    assert [s["service"] for s in use["services"]] == ["ai-clip"]
    assert use["services"][0]["measured_mb"] == 1500
    assert use["unattributed_mb"] == 700
    assert use["unattributed_processes"][0]["pid"] == gone_pid
    assert use["note"].startswith("Attribution unavailable for 1 process(es)")
    assert use["outside_gpu_config_mb"] == 0


def test_podman_is_asked_once_for_many_samples(
    running_project: ComposeProject, fake_nvml: FakeNvml, member_user, settings
) -> None:
    from devices import services

    settings.GPUCONFIG_SAMPLE_SECONDS = 0.1
    clip_pid = _host_pid(_service_container(running_project, "ai-clip"), dict(running_project.env))
    _, a400 = fake_nvml.add_reference_box()
    a400.compute_processes = [(clip_pid, CLIP_BYTES)]
    client = Client()
    client.force_login(member_user)

    for _ in range(3):
        services._sampler.current = None  # force a new sample each time
        assert client.get("/api/system/gpus").status_code == 200

    assert services._sampler.detections >= 3
    assert services._sampler.attributor.podman_calls == 1


def _unused_pid() -> int:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for pid in range(pid_max - 1, 1, -1):
        if not Path(f"/proc/{pid}").exists():
            return pid
    raise AssertionError("no free PID")
