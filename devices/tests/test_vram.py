"""Measured VRAM through the sampler, the API, the preview and ``suggest_estimates``.

NVML is faked at its function boundary; the PID -> container step reads a /proc tree written
here and a container list standing in for ``podman ps`` (the real thing runs in
``test_vram_containers.py``). Everything else (sampler, summaries, API, preview) is real.
"""

from __future__ import annotations

import os
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.core.management import call_command

from devices import services
from devices.attribution import HOST_PID_NAMESPACE, ContainerLabels, ProcessAttributor
from devices.detection import GpuReading
from devices.models import ServiceVramPeak
from devices.vram import real_free_move_warnings, suggest
from gpuconfig.domain import WarningCode

if TYPE_CHECKING:
    from devices.tests.conftest import FakeGpu, FakeNvml

pytestmark = pytest.mark.django_db

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


def test_api_reports_each_service_beside_its_estimate_and_outside_use(
    measured: tuple[FakeGpu, FakeGpu, Listing], member_api
) -> None:
    a5500, a400, _ = measured
    a5500.compute_processes = [(ZOO_PID, 6000 * MIB), (OTHER_PROJECT_PID, 700 * MIB)]
    a400.compute_processes = [(CLIP_PID, 1100 * MIB)]
    a400.graphics_processes = [(HOST_PID, 64 * MIB)]

    body = member_api.get("/api/system/gpus").json()

    gpu0, gpu1 = body["gpus"]
    assert (gpu0["vram_reserved_mb"], gpu0["vram_used_mb"]) == (250, 19304 - 250)
    assert gpu0["vram_free_mb"] == 24564 - 19304
    assert gpu0["memory_use"]["services"] == [
        {
            "service": "ai-enrichment",
            "measured_mb": 6000,
            "estimate_mb": 6800,
            "over_estimate": False,
        }
    ]
    # Another project's "ai-clip" is not ours, whatever its service name.
    assert gpu0["memory_use"]["outside_gpu_config_mb"] == 700
    assert gpu0["memory_use"]["outside_processes"] == [
        {
            "pid": OTHER_PROJECT_PID,
            "used_mb": 700,
            "owner": "container other_db_1 (service ai-clip of project other)",
        }
    ]
    assert gpu1["memory_use"]["services"][0]["measured_mb"] == 1100
    assert gpu1["memory_use"]["outside_processes"] == [
        {"pid": HOST_PID, "used_mb": 64, "owner": "host process"}
    ]
    assert body["warnings"] == []  # 1100 of 1200 and 6000 of 6800: within the estimates


def test_over_estimate_warning_respects_the_configured_margin(
    measured: tuple[FakeGpu, FakeGpu, Listing], member_api, settings
) -> None:
    _, a400, _ = measured
    a400.compute_processes = [(CLIP_PID, 1300 * MIB)]  # 1200 MB estimate: 8.3% over

    assert member_api.get("/api/system/gpus").json()["warnings"] == []

    settings.GPUCONFIG_VRAM_OVER_ESTIMATE_MARGIN_PERCENT = 5
    services.reset_sampler()
    (warning,) = member_api.get("/api/system/gpus").json()["warnings"]
    assert warning == {
        "code": "service_over_estimate",
        "message": "ai-clip holds 1.3 GB on GPU 1, more than its estimate of 1.2 GB (margin 5%): "
        "raise its gpuconfig.vram_estimate_mb label (see suggested estimates)",
        "service": "ai-clip",
        "gpu_index": 1,
    }


def test_processes_are_read_by_the_sampler_once_a_second_not_per_request(
    measured: tuple[FakeGpu, FakeGpu, Listing], member_api, fake_nvml: FakeNvml
) -> None:
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


def test_planning_capacity_leaves_out_the_driver_reserve(
    measured: tuple[FakeGpu, FakeGpu, Listing],
) -> None:
    from gpuconfig.selectors import planning_gpus

    services.gpu_inventory_rescan()

    assert [g.vram_total_mb for g in planning_gpus()] == [24564 - 250, 4094 - 250]


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


def test_suggest_estimates_prints_the_peak_and_the_label_line(
    measured: tuple[FakeGpu, FakeGpu, Listing],
) -> None:
    a5500, a400, _ = measured
    ServiceVramPeak.objects.create(service="ai-enrichment", peak_mb=7420)
    a5500.compute_processes = [(ZOO_PID, 6000 * MIB)]
    a400.compute_processes = [(CLIP_PID, 1234 * MIB)]
    out = StringIO()

    call_command("suggest_estimates", stdout=out)

    text = out.getvalue()
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("ai-")}
    assert lines["ai-clip"].split()[1:4] == ["1,200", "1,234", "1,234"]
    assert lines["ai-clip"].endswith('gpuconfig.vram_estimate_mb: "1300"')
    # The stored peak beats what is measured now.
    assert lines["ai-enrichment"].split()[1:4] == ["6,800", "7,420", "6,000"]
    assert lines["ai-enrichment"].endswith('gpuconfig.vram_estimate_mb: "7500"')
    assert lines["ai-llm"].endswith("(not measured yet)")
    assert 'ai-clip:\n    labels:\n      gpuconfig.vram_estimate_mb: "1300"' in text


def test_suggest_estimates_reset_forgets_the_peaks(
    measured: tuple[FakeGpu, FakeGpu, Listing],
) -> None:
    ServiceVramPeak.objects.create(service="ai-clip", peak_mb=999)
    out = StringIO()

    call_command("suggest_estimates", "--reset", stdout=out)

    assert "Forgot 1 stored peak(s)." in out.getvalue()
    assert not ServiceVramPeak.objects.exists()


def test_suggested_estimates_api(measured: tuple[FakeGpu, FakeGpu, Listing], member_api) -> None:
    _, a400, _ = measured
    a400.compute_processes = [(CLIP_PID, 1150 * MIB)]

    body = member_api.get("/api/system/gpus/suggested-estimates").json()

    by_service = {s["service"]: s for s in body["services"]}
    assert by_service["ai-clip"] == {
        "service": "ai-clip",
        "estimate_mb": 1200,
        "peak_mb": 1150,
        "measured_now_mb": 1150,
        "suggested_mb": 1200,
        "label_line": 'gpuconfig.vram_estimate_mb: "1200"',
        "changes_estimate": False,
    }
    assert by_service["ai-llm"]["suggested_mb"] is None
    assert body["compose_file"].endswith("docker-compose.prod.yml")


def test_anonymous_cannot_read_suggested_estimates(anon_api) -> None:
    assert anon_api.get("/api/system/gpus/suggested-estimates").status_code == 403


def test_preview_warns_when_the_targets_real_free_memory_cannot_hold_a_move(
    measured: tuple[FakeGpu, FakeGpu, Listing], staff_api
) -> None:
    a5500, a400, _ = measured
    # The zoo holds 6 GB on GPU 0; GPU 1 (the A400) has 4094 - 250 - 3500 = 344 MB free.
    a5500.compute_processes = [(ZOO_PID, 6000 * MIB)]
    a400.used_mib = 3750
    a400.compute_processes = [(HOST_PID, 3500 * MIB)]
    # Every strategy keeps a pin: the zoo is pinned to GPU 1, the others planned around it.
    body = {
        "strategy": "vram_based",
        "assignments": [{"service": "ai-enrichment", "gpu_index": 1}],
    }

    response = staff_api.post("/api/system/gpu-config/preview", body, format="json")

    assert response.status_code == 200, response.content
    moves = [
        w
        for w in response.json()["warning_details"]
        if w["code"] == WarningCode.MOVE_EXCEEDS_REAL_FREE
    ]
    assert len(moves) == 1, response.json()["warnings"]
    assert moves[0]["gpu_index"] == 1
    assert moves[0]["service"] == "ai-enrichment"
    assert moves[0]["message"].startswith("GPU 1 has 0.3 GB really free now (measured)")
    assert "ai-enrichment (6.0 GB) moving there" in moves[0]["message"]


def _reading(index: int, used: int, total: int = 24000, reserved: int = 0) -> GpuReading:
    return GpuReading(index, f"GPU-{index}", "G", total, used, "8.6", vram_reserved_mb=reserved)


def test_a_move_fits_when_the_services_leaving_the_target_free_enough() -> None:
    gpus = [_reading(0, 20000), _reading(1, 21000, reserved=500)]  # GPU 1: 2500 MB free
    measured = {"zoo": {"GPU-0": 6800}, "clip": {"GPU-1": 4000}}

    swap = real_free_move_warnings(
        gpus=gpus,
        measured=measured,
        current={"zoo": 0, "clip": 1},
        planned={"zoo": 1, "clip": 0},
        demand={"zoo": 6500, "clip": 1200},
    )
    no_room = real_free_move_warnings(
        gpus=gpus,
        measured=measured,
        current={"zoo": 0, "clip": 1},
        planned={"zoo": 1, "clip": 1},
        demand={"zoo": 6800, "clip": 1200},
    )

    assert swap == []  # 2500 free + 4000 freed by clip >= 6500
    (warning,) = no_room
    assert warning.code is WarningCode.MOVE_EXCEEDS_REAL_FREE
    assert warning.message == (
        "GPU 1 has 2.5 GB really free now (measured): not enough for zoo (6.8 GB) moving there"
    )


@pytest.mark.parametrize(
    ("peak", "suggested"), [(None, None), (1, 100), (8802, 8900), (8800, 8800), (21701, 21800)]
)
def test_suggestion_rounds_the_peak_up_to_100_mb(peak: int | None, suggested: int | None) -> None:
    assert suggest(peak) == suggested


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
