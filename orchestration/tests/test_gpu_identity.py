"""One GPU identity for the runtime helper and the verification after Apply: the UUID."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devices import runtime
from devices.detection import simulated_uuid
from devices.runtime import same_gpu
from devices.selectors import gpu_identity_problem
from devices.services import reset_sampler
from gpuconfig import config_files
from gpuconfig.domain import ResolvedAssignment
from orchestration.executor import container_problem
from orchestration.podman import ContainerState

UUID_1 = simulated_uuid(1)


def test_same_gpu_ignores_case_and_blanks_but_never_matches_nothing() -> None:
    assert same_gpu("GPU-ABCDEF01-0000", " gpu-abcdef01-0000\n")
    assert not same_gpu("GPU-ABCDEF01-0000", "GPU-ABCDEF01-0001")
    assert not same_gpu("", "")


def test_the_override_and_the_runtime_helper_use_the_same_variables() -> None:
    assert config_files.GPU_UUID_ENV == runtime.UUID_ENV == "GPUCONFIG_GPU_UUID"
    assert config_files.GPU_INDEX_ENV == runtime.INDEX_ENV == "GPUCONFIG_GPU_INDEX"


def test_identity_holds_on_the_reference_gpus() -> None:
    assert gpu_identity_problem(1, UUID_1) is None
    assert gpu_identity_problem(1, UUID_1.upper()) is None
    assert gpu_identity_problem(7, UUID_1) is None  # not detected: the device check decides
    assert gpu_identity_problem(1, "") is None  # saved before UUIDs were recorded


def _swapped_cards(tmp_path: Path) -> Path:
    """GPU 1 is now another card (another UUID): a swap or a re-cabling."""
    path = tmp_path / "swapped.json"
    gpus = [
        {"index": 0, "name": "NVIDIA RTX A5500", "vram_total_mb": 24564, "vram_used_mb": 100,
         "compute_capability": "8.6", "uuid": simulated_uuid(0)},
        {"index": 1, "name": "NVIDIA RTX A4000", "vram_total_mb": 16376, "vram_used_mb": 100,
         "compute_capability": "8.6", "uuid": "GPU-11111111-2222-3333-4444-555555555555"},
    ]  # fmt: skip
    path.write_text(json.dumps({"gpus": gpus}))
    return path


def test_verification_refuses_a_container_whose_index_now_names_another_gpu(
    settings, tmp_path: Path
) -> None:
    settings.GPUCONFIG_SIMULATED_GPUS = _swapped_cards(tmp_path)
    reset_sampler()
    want = ResolvedAssignment("ai-clip", 1, gpu_uuid=UUID_1)
    now = datetime.now(UTC)
    state = ContainerState(
        id="c" * 64,
        name="p_ai-clip_1",
        service="ai-clip",
        running=True,
        status="running",
        health=None,
        cdi_devices=("nvidia.com/gpu=1",),
        env={"GPUCONFIG_GPU_UUID": UUID_1, "GPUCONFIG_GPU_INDEX": "1"},
        created=now,
    )

    problem = container_problem(state, want, now - timedelta(seconds=1), check_gpu=True)

    assert problem == (
        f"GPU 1 is now GPU-11111111-2222-3333-4444-555555555555, not {UUID_1} that the "
        "configuration was saved for: re-scan the GPUs and save again"
    )


@pytest.mark.parametrize("uuid", [UUID_1, UUID_1.upper()])
def test_verification_accepts_the_planned_gpu(uuid: str) -> None:
    want = ResolvedAssignment("ai-clip", 1, gpu_uuid=uuid)
    now = datetime.now(UTC)
    state = ContainerState(
        id="c" * 64,
        name="p_ai-clip_1",
        service="ai-clip",
        running=True,
        status="running",
        health=None,
        cdi_devices=("nvidia.com/gpu=1",),
        env={"GPUCONFIG_GPU_UUID": uuid, "GPUCONFIG_GPU_INDEX": "1"},
        created=now,
    )

    assert container_problem(state, want, now - timedelta(seconds=1), check_gpu=True) is None
