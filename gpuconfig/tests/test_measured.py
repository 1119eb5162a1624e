"""Measured VRAM beside the plan (``gpuconfig.measured``): each service's memory beside its
estimate in the GPUs API, over-estimate warnings, the preview's warning about a move the
target's real free memory cannot hold, and the planner's capacity without the driver reserve.

NVML is faked at its function boundary; the PID -> container step reads a /proc tree written
by ``devices.tests.measured_box``. Everything else (sampler, summaries, API, preview) is real.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from devices import services
from devices.detection import GpuReading
from devices.tests.conftest import fake_nvml
from devices.tests.measured_box import (
    CLIP_PID,
    HOST_PID,
    MIB,
    OTHER_PROJECT_PID,
    ZOO_PID,
    Listing,
    measured,
)
from gpuconfig.domain import WarningCode
from gpuconfig.measured import real_free_move_warnings
from gpuconfig.selectors import planning_gpus

if TYPE_CHECKING:
    from devices.tests.conftest import FakeGpu

__all__ = ["fake_nvml", "measured"]  # the fixtures, used by name

pytestmark = pytest.mark.django_db


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
        "message": "ai-clip holds 1.3 GiB on GPU 1, more than its estimate of 1.2 GiB (margin 5%): "
        "raise its gpuconfig.vram_estimate_mb label (see suggested estimates)",
        "service": "ai-clip",
        "gpu_index": 1,
    }


def test_planning_capacity_leaves_out_the_driver_reserve(
    measured: tuple[FakeGpu, FakeGpu, Listing],
) -> None:
    services.gpu_inventory_rescan()

    assert [g.vram_total_mb for g in planning_gpus()] == [24564 - 250, 4094 - 250]


def test_preview_warns_when_the_targets_real_free_memory_cannot_hold_a_move(
    measured: tuple[FakeGpu, FakeGpu, Listing], staff_api
) -> None:
    a5500, a400, _ = measured
    # The zoo holds 6000 MiB on GPU 0; GPU 1 (the A400) has 4094 - 250 - 3500 = 344 MiB free.
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
    assert moves[0]["message"] == (
        "GPU 1 has 344 MiB really free now (measured): "
        "not enough for ai-enrichment (5.9 GiB) moving there"
    )


def _reading(index: int, used: int, total: int = 24000, reserved: int = 0) -> GpuReading:
    return GpuReading(index, f"GPU-{index}", "G", total, used, "8.6", vram_reserved_mb=reserved)


def test_a_move_fits_when_the_services_leaving_the_target_free_enough() -> None:
    gpus = [_reading(0, 20000), _reading(1, 21000, reserved=500)]  # GPU 1: 2500 MiB free
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
        "GPU 1 has 2.4 GiB really free now (measured): not enough for zoo (6.6 GiB) moving there"
    )
