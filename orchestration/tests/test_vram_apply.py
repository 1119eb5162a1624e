"""A service's measured memory follows it when Apply moves it to another GPU.

Real stand-in containers, a real Apply through the real Celery worker (the fixtures of
``orchestration/tests/test_apply_containers.py``), and a faked NVML that reports each stand-in
process on the GPU podman really gave it: the CDI spec puts ``STANDIN_GPU=<n>`` into the
container's environment, and the fake reads it from ``/proc/<pid>/environ``, as the driver
would know which GPU a process has opened. Nothing tells the fake where a service should be.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devices import services
from devices.detection import simulated_uuid
from orchestration.tests.test_apply_containers import (  # the same Apply fixtures and helpers
    DESIGN,
    _apply,
    _body,
    _put,
    broker_url,
    stand,
    worker,
)

if TYPE_CHECKING:
    from devices.tests.conftest import FakeNvml

__all__ = ["broker_url", "stand", "worker"]

pytestmark = [pytest.mark.containers, pytest.mark.django_db(transaction=True)]

STANDIN_BYTES = 1000 * 1024**2


class ProcessesOnGpu:
    """The compute processes the fake driver lists for GPU ``index``: every stand-in process
    whose environment says podman resolved CDI device ``nvidia.com/gpu=<index>``."""

    def __init__(self, index: int) -> None:
        self.marker = f"STANDIN_GPU={index}".encode()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:  # exited meanwhile, or a kernel thread
                continue
            if self.marker in environ:
                yield int(entry.name), STANDIN_BYTES


def _where(member_api, service: str) -> dict[int, int]:
    """GPU index -> MB measured for ``service``, from the API."""
    services._sampler.current = None  # a fresh sample, not the one of a second ago
    gpus = member_api.get("/api/system/gpus").json()["gpus"]
    return {
        gpu["index"]: s["measured_mb"]
        for gpu in gpus
        for s in gpu["memory_use"]["services"]
        if s["service"] == service and s["measured_mb"]
    }


def test_a_moved_services_memory_follows_it_after_apply(
    stand, worker, staff_api, member_api, fake_nvml: FakeNvml, settings
) -> None:
    settings.GPUCONFIG_SIMULATED_GPUS = None  # the faked NVML is the web side's source now
    for index, name, total in ((0, "NVIDIA RTX A5500", 24564), (1, "NVIDIA RTX A400", 4094)):
        gpu = fake_nvml.add_gpu(name, simulated_uuid(index), total_mib=total, used_mib=2000)
        gpu.compute_processes = ProcessesOnGpu(index)  # type: ignore[assignment]
    services.reset_sampler()

    _put(staff_api, _body(DESIGN))
    assert _apply(staff_api, worker)["run"]["status"] == "succeeded"
    assert _where(member_api, "ai-clip") == {0: 1000}
    assert _where(member_api, "ai-enrichment") == {1: 1000}

    _put(staff_api, _body({**DESIGN, "ai-clip": 1}))
    assert _apply(staff_api, worker)["run"]["status"] == "succeeded"

    assert _where(member_api, "ai-clip") == {1: 1000}
    gpu1 = next(g for g in member_api.get("/api/system/gpus").json()["gpus"] if g["index"] == 1)
    assert [s["service"] for s in gpu1["memory_use"]["services"]] == [
        "ai-clip",
        "ai-enrichment",
    ]
