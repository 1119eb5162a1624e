"""The reference box with measured GPU processes, for the measured-VRAM tests (here and in
``gpuconfig.tests``): NVML faked at its function boundary, the PID -> container step reading
a /proc tree written here and a container list standing in for ``podman ps`` (the real thing
runs in ``test_vram_containers.py``).

Use it with ``from devices.tests.measured_box import measured`` (and ``fake_nvml`` from
``devices.tests.conftest`` outside ``devices.tests``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devices import services
from devices.attribution import HOST_PID_NAMESPACE, ContainerLabels, ProcessAttributor

if TYPE_CHECKING:
    from devices.tests.conftest import FakeGpu, FakeNvml

MIB = 1024**2
CLIP_PID, ZOO_PID, HOST_PID, OTHER_PROJECT_PID = 1001, 1002, 1003, 1004


def _cid(n: int) -> str:
    return f"{n:064x}"


class Listing:
    """Stands in for ``podman ps``: the containers, and how often it was asked."""

    def __init__(self, containers: list[ContainerLabels]) -> None:
        self.containers = containers
        self.calls = 0

    def __call__(self) -> list[ContainerLabels]:
        self.calls += 1
        return self.containers


@pytest.fixture
def measured(
    fake_nvml: FakeNvml, settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[FakeGpu, FakeGpu, Listing]:
    """The reference box through NVML (v2, 250 MB reserve each) and four GPU processes:
    ai-clip and ai-enrichment containers, a host process, another project's container."""
    settings.GPUCONFIG_SIMULATED_GPUS = None
    project = settings.GPUCONFIG_COMPOSE_PROJECT
    a5500, a400 = fake_nvml.add_reference_box()
    a5500.reserved_mib = a400.reserved_mib = 250
    proc = tmp_path / "proc"
    (proc / "self" / "ns").mkdir(parents=True)
    os.symlink(HOST_PID_NAMESPACE, proc / "self" / "ns" / "pid")
    for pid, cgroup in {
        CLIP_PID: f"0::/libpod_parent/libpod-{_cid(1)}\n",
        ZOO_PID: f"0::/machine.slice/libpod-{_cid(2)}.scope/container\n",
        HOST_PID: "0::/user.slice/session-1.scope\n",
        OTHER_PROJECT_PID: f"4:memory:/libpod_parent/libpod-{_cid(3)}\n",
    }.items():
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "cgroup").write_text(cgroup)
    listing = Listing(
        [
            ContainerLabels(_cid(1), f"{project}_ai-clip_1", project, "ai-clip"),
            ContainerLabels(_cid(2), f"{project}_ai-enrichment_1", project, "ai-enrichment"),
            ContainerLabels(_cid(3), "other_db_1", "other", "ai-clip"),
        ]
    )

    def attributor() -> ProcessAttributor:
        return ProcessAttributor(proc_root=proc, list_containers=listing)

    monkeypatch.setattr(services, "ProcessAttributor", attributor)
    services.reset_sampler()
    return a5500, a400, listing
