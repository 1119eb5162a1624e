"""Measured VRAM as facts: the sampler reads each GPU's processes once a second, traces their
memory to the services holding it, and stores each service's peak.

NVML is faked at its function boundary and the PID -> container step reads a /proc tree
(``measured_box``); the comparison with the estimates is tested in
``gpuconfig/tests/test_measured.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from devices import services
from devices.models import ServiceVramPeak
from devices.tests.measured_box import (
    CLIP_PID,
    HOST_PID,
    MIB,
    OTHER_PROJECT_PID,
    ZOO_PID,
    Listing,
    measured,
)
from devices.vram import gpu_memory_holders

if TYPE_CHECKING:
    from devices.tests.conftest import FakeGpu, FakeNvml

__all__ = ["measured"]  # the fixture, used by name

pytestmark = pytest.mark.django_db


def test_each_gpus_memory_is_traced_to_the_services_and_processes_holding_it(
    measured: tuple[FakeGpu, FakeGpu, Listing], settings
) -> None:
    a5500, a400, _ = measured
    a5500.compute_processes = [(ZOO_PID, 6000 * MIB), (OTHER_PROJECT_PID, 700 * MIB)]
    a400.compute_processes = [(CLIP_PID, 1100 * MIB)]
    a400.graphics_processes = [(HOST_PID, 64 * MIB)]
    project = settings.GPUCONFIG_COMPOSE_PROJECT
    sample = services.gpu_sample()

    holders = gpu_memory_holders(sample, project=project, managed={"ai-clip", "ai-enrichment"})

    gpu0, gpu1 = holders[str(a5500.uuid)], holders[str(a400.uuid)]
    assert (gpu0.measured, gpu0.note) == (True, "")
    assert dict(gpu0.services) == {"ai-enrichment": 6000}
    # Another project's "ai-clip" is not ours, whatever its service name.
    assert gpu0.outside_processes == (
        {
            "pid": OTHER_PROJECT_PID,
            "used_mb": 700,
            "owner": "container other_db_1 (service ai-clip of project other)",
        },
    )
    assert dict(gpu1.services) == {"ai-clip": 1100}
    assert gpu1.outside_processes == ({"pid": HOST_PID, "used_mb": 64, "owner": "host process"},)
    # A service of the project that GPU Config does not manage is use outside it.
    unmanaged = gpu_memory_holders(sample, project=project, managed={"ai-clip"})[str(a5500.uuid)]
    assert dict(unmanaged.services) == {}
    assert unmanaged.outside_processes[0]["owner"] == (
        f"container {project}_ai-enrichment_1 (service ai-enrichment of project {project})"
    )


def test_processes_are_read_by_the_sampler_once_a_second_not_per_request(
    measured: tuple[FakeGpu, FakeGpu, Listing], member_api, fake_nvml: FakeNvml, settings
) -> None:
    # Polls within one sample interval share one reading (the interval is long here, so that
    # a loaded machine's slow polls, which also read the containers, stay inside it).
    settings.GPUCONFIG_SAMPLE_SECONDS = 60
    _, a400, listing = measured
    a400.compute_processes = [(CLIP_PID, 1100 * MIB)]
    detections = services._sampler.detections

    for _ in range(20):
        assert member_api.get("/api/system/gpus").status_code == 200

    assert services._sampler.detections == detections + 1
    assert fake_nvml.process_calls == 4  # compute + graphics, two GPUs, one sample
    assert fake_nvml.init_calls == 1
    assert listing.calls == 1


def test_simulated_gpus_are_not_measured(member_api) -> None:
    body = member_api.get("/api/system/gpus").json()

    for gpu in body["gpus"]:
        assert gpu["memory_use"]["measured"] is False
        assert gpu["memory_use"]["note"] == (
            "Not measured: this source reports no processes (simulated GPUs)."
        )
        assert gpu["memory_use"]["outside_gpu_config_mb"] is None


def test_peaks_are_stored_and_never_lowered(
    measured: tuple[FakeGpu, FakeGpu, Listing], member_api
) -> None:
    _, a400, _ = measured
    a400.compute_processes = [(CLIP_PID, 1100 * MIB)]
    member_api.get("/api/system/gpus")
    a400.compute_processes = [(CLIP_PID, 900 * MIB)]
    services._sampler.current = None
    member_api.get("/api/system/gpus")

    peak = ServiceVramPeak.objects.get(service="ai-clip")
    assert peak.peak_mb == 1100
    assert peak.gpu_uuid == "GPU-a91e6d04-37c2-4f85-b0d9-6e2f1c8a5d47"


def test_a_database_failure_while_storing_peaks_does_not_lose_the_sample(
    measured: tuple[FakeGpu, FakeGpu, Listing], monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    from django.db import OperationalError

    _, a400, _ = measured
    a400.compute_processes = [(CLIP_PID, 1100 * MIB)]

    def refuse(*args: object, **kwargs: object) -> int:
        raise OperationalError("the database is restarting")

    monkeypatch.setattr(ServiceVramPeak.objects, "filter", refuse)
    sample = services.gpu_sample()

    assert sample.error == ""
    assert [p.process.used_mb for p in sample.processes or ()] == [1100]
    assert "could not store measured VRAM peaks: the database is restarting" in caplog.text
