"""From a host PID to a container: cgroup layouts, the PID-namespace guard, podman caching.

The cgroup texts below are what podman 4.3 wrote on this VM (cgroup v1 hierarchies plus the
v2 unified line, cgroupfs manager) and what podman writes under cgroup v2 with systemd;
``test_vram_containers.py`` reads a real container's file as well.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devices.attribution import (
    HOST_PID_NAMESPACE,
    ContainerLabels,
    Owner,
    ProcessAttributor,
    container_id_from_cgroup,
    labels_of,
)
from devices.detection import GpuProcess

CID = "b1223173fd0497a3cd8e79f1a68eea7524712771ae8bb2b1fb678da20719acf6"
OTHER = "9" * 64
GPU = "GPU-a91e6d04-37c2-4f85-b0d9-6e2f1c8a5d47"

# Recorded on this VM: `podman run` (runc, cgroupfs), then /proc/<its pid>/cgroup.
HYBRID_V1 = "\n".join(
    [
        f"{n}:{c}:/libpod_parent/libpod-{CID}"
        for n, c in enumerate(
            ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"], start=1
        )
    ]
    + [f"9:name=systemd:/libpod_parent/libpod-{CID}", f"0::/libpod_parent/libpod-{CID}"]
)
V2_SYSTEMD = f"0::/machine.slice/libpod-{CID}.scope/container\n"
V2_ROOTLESS = (
    f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container\n"
)
V1_SYSTEMD = (
    f"4:memory:/machine.slice/libpod-{CID}.scope\n1:cpu:/machine.slice/libpod-{CID}.scope\n"
)
HOST_PROCESS = "0::/user.slice/user-0.slice/session-1.scope\n4:memory:/user.slice\n"
CONMON = f"0::/machine.slice/libpod-conmon-{CID}.scope\n"
DOCKER = f"0::/system.slice/docker-{OTHER}.scope\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(HYBRID_V1, CID, id="cgroup-v1-cgroupfs-recorded-here"),
        pytest.param(V2_SYSTEMD, CID, id="cgroup-v2-systemd-scope"),
        pytest.param(V2_ROOTLESS, CID, id="cgroup-v2-rootless"),
        pytest.param(V1_SYSTEMD, CID, id="cgroup-v1-systemd-scope"),
        pytest.param(HOST_PROCESS, None, id="host-process"),
        pytest.param(CONMON, None, id="conmon-is-not-the-container"),
        pytest.param(DOCKER, OTHER, id="docker-scope"),
        pytest.param(f"0::/libpod_parent/libpod-{CID[:12]}\n", None, id="short-id-is-not-an-id"),
        pytest.param("", None, id="empty"),
    ],
)
def test_container_id_from_cgroup(text: str, expected: str | None) -> None:
    assert container_id_from_cgroup(text) == expected


def test_this_test_process_is_on_the_host() -> None:
    assert container_id_from_cgroup(Path("/proc/self/cgroup").read_text()) is None


def test_labels_of_a_podman_ps_row() -> None:
    row = {
        "Id": CID,
        "Names": ["proj_ai-clip_1"],
        "Labels": {"io.podman.compose.project": "proj", "io.podman.compose.service": "ai-clip"},
    }
    assert labels_of(row) == ContainerLabels(CID, "proj_ai-clip_1", "proj", "ai-clip")
    docker_style = {
        "Id": OTHER,
        "Labels": {"com.docker.compose.project": "p", "com.docker.compose.service": "s"},
    }
    assert labels_of(docker_style) == ContainerLabels(OTHER, OTHER[:12], "p", "s")
    assert labels_of({"Names": ["x"]}) is None


def fake_proc(root: Path, cgroups: dict[int, str], namespace: str = HOST_PID_NAMESPACE) -> Path:
    """A /proc with the given cgroup files and a self/ns/pid link naming ``namespace``."""
    (root / "self" / "ns").mkdir(parents=True)
    os.symlink(namespace, root / "self" / "ns" / "pid")
    for pid, text in cgroups.items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "cgroup").write_text(text)
    return root


class CountingLister:
    def __init__(self, containers: list[ContainerLabels]) -> None:
        self.containers = containers
        self.calls = 0

    def __call__(self) -> list[ContainerLabels]:
        self.calls += 1
        return list(self.containers)


def test_attribution_names_container_host_and_missing_pid(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {10: HYBRID_V1, 20: HOST_PROCESS})
    clip = ContainerLabels(CID, "p_ai-clip_1", "p", "ai-clip")
    lister = CountingLister([clip])
    attributor = ProcessAttributor(proc_root=proc, list_containers=lister)

    result = attributor.attribute(
        [GpuProcess(10, GPU, 1200), GpuProcess(20, GPU, 300), GpuProcess(30, GPU, 50)]
    )

    assert [(a.pid, a.owner, a.container) for a in result] == [
        (10, Owner.CONTAINER, clip),
        (20, Owner.HOST, None),
        (30, Owner.UNAVAILABLE, None),
    ]
    assert "PID 30 is not in /proc" in result[2].reason


def test_podman_is_asked_once_per_new_container_not_per_sample(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {10: HYBRID_V1, 11: DOCKER})
    lister = CountingLister([ContainerLabels(CID, "c", "p", "ai-clip")])
    now = [0.0]
    attributor = ProcessAttributor(proc_root=proc, list_containers=lister, clock=lambda: now[0])
    processes = [GpuProcess(10, GPU, 1200), GpuProcess(11, GPU, 100)]

    for _ in range(50):  # fifty samples
        result = attributor.attribute(processes)

    # One call learned the podman container; the Docker one is unknown to podman and is
    # not asked about again until the retry interval has passed.
    assert lister.calls == 1
    assert result[0].owner is Owner.CONTAINER
    assert result[1].owner is Owner.UNAVAILABLE
    assert "podman does not know it" in result[1].reason
    now[0] = 31.0
    attributor.attribute(processes)
    assert lister.calls == 2


def test_outside_the_host_pid_namespace_nothing_is_attributed(tmp_path: Path) -> None:
    # A container without `pid: host`: /proc/10 may exist but is one of its own processes.
    proc = fake_proc(tmp_path, {10: HYBRID_V1}, namespace="pid:[4026532999]")
    lister = CountingLister([ContainerLabels(CID, "c", "p", "ai-clip")])
    attributor = ProcessAttributor(proc_root=proc, list_containers=lister)

    (result,) = attributor.attribute([GpuProcess(10, GPU, 1200)])

    assert result.owner is Owner.UNAVAILABLE
    assert "pid: host" in result.reason
    assert lister.calls == 0


def test_podman_failure_makes_container_processes_unavailable_not_outside(
    tmp_path: Path,
) -> None:
    proc = fake_proc(tmp_path, {10: HYBRID_V1})

    def broken() -> list[ContainerLabels]:
        raise OSError("podman ps failed (exit status 125): cannot connect")

    attributor = ProcessAttributor(proc_root=proc, list_containers=broken)
    (result,) = attributor.attribute([GpuProcess(10, GPU, 1200)])

    assert result.owner is Owner.UNAVAILABLE
    assert "podman cannot be asked" in result.reason
