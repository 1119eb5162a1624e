"""How sentences name a GPU (issue 20): "GPU 3" on the local host, "gpu-box-2 / GPU 1" for
another host's GPU 101 (`gpuconfig.domain.gpu_label`), in the validator's warnings and the
change lines users read."""

from __future__ import annotations

from dataclasses import replace

import pytest

from devices.models import HOST_INDEX_STRIDE as DEVICES_STRIDE
from gpuconfig.changes import config_changes
from gpuconfig.domain import (
    HOST_INDEX_STRIDE,
    MIB_PER_GIB,
    Configuration,
    Gpu,
    ResolvedAssignment,
    Service,
    ServiceRequest,
    StrategyName,
    WarningCode,
    gpu_label,
    gpu_labels,
)
from gpuconfig.strategies.cordon import maintenance_warnings
from gpuconfig.validation import evaluate

GIB = MIB_PER_GIB

# This host ("gpu-box-1", number 0) with GPU 0, and host gpu-box-2 (number 1) with its GPU 1.
LOCAL = Gpu(index=0, name="RTX A5500", vram_total_mb=24 * GIB, host="gpu-box-1")
REMOTE = Gpu(index=101, name="RTX A4000", vram_total_mb=16 * GIB, device_index=1, host="gpu-box-2")


# --- gpu_label ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "host", "label"),
    [
        (3, "", "GPU 3"),  # one host: as it always read
        (3, "gpu-box-1", "GPU 3"),  # the local host's GPUs keep their plain name
        (99, "gpu-box-1", "GPU 99"),
        (100, "gpu-box-2", "gpu-box-2 / GPU 0"),
        (101, "gpu-box-2", "gpu-box-2 / GPU 1"),
        (312, "rack-7", "rack-7 / GPU 12"),
        (101, "", "GPU 101"),  # no host name known: no guess
    ],
)
def test_gpu_label(index: int, host: str, label: str) -> None:
    assert gpu_label(index, host) == label


def test_gpu_label_without_host_argument_is_todays_text() -> None:
    assert gpu_label(0) == "GPU 0"
    assert gpu_label(101) == "GPU 101"


def test_gpu_labels_maps_every_gpu_given() -> None:
    gone = replace(REMOTE, index=102, device_index=2, present=False)
    assert gpu_labels([LOCAL, REMOTE, gone]) == {
        0: "GPU 0",
        101: "gpu-box-2 / GPU 1",
        102: "gpu-box-2 / GPU 2",
    }


def test_stride_is_the_one_the_devices_app_numbers_hosts_with() -> None:
    # The domain cannot import devices.models (no Django there): both must agree.
    assert HOST_INDEX_STRIDE == DEVICES_STRIDE


# --- the validator's warnings -------------------------------------------------------------------


def _request(name: str, estimate_gib: int, budget_env: str | None = None) -> ServiceRequest:
    return ServiceRequest(Service(name, f"{name}-model", estimate_gib * GIB, budget_env=budget_env))


def test_warnings_name_another_hosts_gpu_by_its_host() -> None:
    clip, detector = _request("ai-clip", 20), _request("ai-detector", 20)
    result = evaluate(
        [LOCAL, REMOTE],
        [clip, detector],
        {"ai-clip": 101, "ai-detector": 0},
        reserve_mb=0,
    )
    messages = {w.code: w.message for w in result.warnings if w.service == "ai-clip"}
    assert messages == {
        WarningCode.SERVICE_EXCEEDS_GPU: (
            "ai-clip needs ~20.0 GiB, exceeds gpu-box-2 / GPU 1 (16.0 GiB)"
        )
    }
    # The warning still points at the GPU by its global index, for the page's row.
    assert [w.gpu_index for w in result.warnings] == [101]


def test_budget_and_combined_warnings_on_another_host() -> None:
    llm = _request("ai-llm", 12, budget_env="VRAM_BUDGET_GB")
    clip, yolo = _request("ai-clip", 6), _request("ai-yolo", 6)
    result = evaluate(
        [LOCAL, REMOTE],
        [llm, clip, yolo],
        {"ai-llm": 101, "ai-clip": 101, "ai-yolo": 101},
        reserve_mb=0,
    )
    messages = [w.message for w in result.warnings]
    assert messages == [
        "ai-llm VRAM budget (12.0 GiB) exceeds the 4.0 GiB left on gpu-box-2 / GPU 1 "
        "(16.0 GiB). Auto-adjusted to 4.0 GiB."
    ]
    crowded = evaluate(
        [LOCAL, REMOTE],
        [clip, yolo, _request("ai-ocr", 6)],
        dict.fromkeys(("ai-clip", "ai-yolo", "ai-ocr"), 101),
        reserve_mb=0,
    )
    assert [w.message for w in crowded.warnings] == [
        "Combined VRAM (~18.0 GiB) exceeds gpu-box-2 / GPU 1 capacity (16.0 GiB)"
    ]


def test_a_gone_gpu_of_another_host_is_named_by_its_host() -> None:
    gone = replace(REMOTE, present=False)
    result = evaluate([LOCAL, gone], [_request("ai-clip", 4)], {"ai-clip": 101}, reserve_mb=0)
    assert [w.message for w in result.warnings] == [
        "ai-clip is assigned to gpu-box-2 / GPU 1, which is not detected"
    ]
    # A GPU no detection ever reported has no known host: its number, as before.
    never = evaluate([LOCAL], [_request("ai-clip", 4)], {"ai-clip": 205}, reserve_mb=0)
    assert [w.message for w in never.warnings] == [
        "ai-clip is assigned to GPU 205, which is not detected"
    ]


def test_vendor_and_isolation_sentences_on_another_host() -> None:
    amd = replace(REMOTE, vendor="amd")
    result = evaluate(
        [amd],
        [_request("ai-clip", 4)],
        {"ai-clip": 101},
        reserve_mb=0,
        strategy=StrategyName.ISOLATION_FIRST,
    )
    assert [w.message for w in result.warnings] == [
        "ai-clip runs on CUDA (gpuconfig.accelerator: cuda) but gpu-box-2 / GPU 1 is an AMD "
        "GPU; pin it to an NVIDIA GPU",
        "Isolation-first needs two GPUs, but only gpu-box-2 / GPU 1 is detected: the LLM "
        "shares it with every other service",
    ]


def test_the_local_gpu_reads_as_before_beside_another_host() -> None:
    result = evaluate([LOCAL, REMOTE], [_request("ai-clip", 30)], {"ai-clip": 0}, reserve_mb=0)
    assert [w.message for w in result.warnings] == [
        "ai-clip needs ~30.0 GiB, exceeds GPU 0 (24.0 GiB)"
    ]


# --- the change lines --------------------------------------------------------------------------


def _config(**where: int | None) -> Configuration:
    return Configuration(tuple(ResolvedAssignment(name, gpu) for name, gpu in where.items()))


def test_change_lines_name_another_hosts_gpu_by_its_host() -> None:
    before = _config(clip=0, yolo=None)
    after = _config(clip=101, yolo=101)
    changes = config_changes(before, after, gpu_labels([LOCAL, REMOTE]))
    assert [c.describe() for c in changes] == [
        "clip: GPU 0 → gpu-box-2 / GPU 1",
        "yolo: placed on gpu-box-2 / GPU 1 for the first time",
    ]
    assert changes[0].as_dict()["description"] == "clip: GPU 0 → gpu-box-2 / GPU 1"
    assert changes[0].as_dict()["to_gpu"] == 101  # the API's numbers stay global indexes


def test_change_lines_without_labels_read_as_before() -> None:
    changes = config_changes(_config(clip=0), _config(clip=101))
    assert [c.describe() for c in changes] == ["clip: GPU 0 → GPU 101"]


# --- the strategies' notes ----------------------------------------------------------------------


def test_maintenance_warning_names_another_hosts_gpu_by_its_host() -> None:
    cordoned = replace(REMOTE, cordoned=True)
    pinned = replace(_request("ai-clip", 4), pinned_gpu=101)
    warnings = maintenance_warnings([LOCAL, cordoned], [pinned], {"ai-clip": 101}, applied={})
    assert [w.message for w in warnings] == [
        "ai-clip is pinned to gpu-box-2 / GPU 1, which is in maintenance: it takes no new "
        "services, and Apply refuses this pin"
    ]
