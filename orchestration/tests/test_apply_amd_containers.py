"""Apply & Restart for an AMD GPU (issue 22): real podman containers, a CDI spec of kind
``amd.com/gpu`` standing in for ``amd-ctk cdi generate``'s, a real Celery worker.

The host here is mixed, as the simulated inventory says: an NVIDIA A5500 (GPU 0) and two
AMD RX 7800 XT (GPUs 1 and 2, ``amd.com/gpu=0`` and ``=1``). CLIP is labelled
``gpuconfig.accelerator: rocm``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from devices.services import gpu_inventory_rescan
from orchestration.models import ApplyRun
from orchestration.tests.containers import (
    ComposeProject,
    installed_amd_cdi_spec,
    standin_compose,
)
from orchestration.tests.test_apply_containers import (
    _containers,
    _steps,
    _wait,
    broker_url,
    stand,
    worker,
)
from orchestration.worker_process import CeleryWorker

pytestmark = [pytest.mark.containers, pytest.mark.django_db(transaction=True)]

__all__ = ["broker_url", "stand", "worker"]  # fixtures shared with the NVIDIA tests

RX7800XT = {
    "vendor": "amd",
    "name": "AMD Radeon RX 7800 XT",
    "vram_total_mb": 16368,
    "vram_used_mb": 174,
    "compute_capability": "gfx1101",
}
MIXED_HOST = {
    "gpus": [
        {
            "index": 0,
            "uuid": "GPU-00000000-0000-0000-0000-000000000000",
            "name": "NVIDIA RTX A5500",
            "vram_total_mb": 24564,
            "vram_used_mb": 100,
            "compute_capability": "8.6",
        },
        # The UUIDs and nodes of gpustack-runtime's 2 x RX 7800 XT capture.
        {
            **RX7800XT,
            "index": 1,
            "device_index": 0,
            "uuid": "GPU-5c88007d760374f3",
            "render_node": "/dev/dri/renderD128",
        },
        {
            **RX7800XT,
            "index": 2,
            "device_index": 1,
            "uuid": "GPU-d99e7fe92c7bdf75",
            "render_node": "/dev/dri/renderD129",
        },
        # A third AMD card the CDI spec does not name (amd.com/gpu=2): podman refuses it.
        {
            **RX7800XT,
            "index": 3,
            "device_index": 2,
            "uuid": "GPU-0000000000000abc",
            "render_node": "/dev/dri/renderD130",
        },
    ]
}
ON_NVIDIA = {"ai-llm": 0, "ai-yolo26": 0, "ai-florence": 0, "ai-enrichment": 0}


@pytest.fixture
def amd_cdi_spec() -> Iterator[Path]:
    with installed_amd_cdi_spec() as path:
        yield path


@pytest.fixture
def mixed(
    amd_cdi_spec: Path, compose_project: ComposeProject, standin_image: str, settings, tmp_path
) -> ComposeProject:
    """CLIP runs on ROCm; the inventory is the mixed host (before ``stand`` starts it)."""
    definition = standin_compose(standin_image)
    definition["services"]["ai-clip"]["labels"]["gpuconfig.accelerator"] = "rocm"
    compose_project.write_base(definition)
    inventory = tmp_path / "mixed-host.json"
    inventory.write_text(json.dumps(MIXED_HOST))
    settings.GPUCONFIG_SIMULATED_GPUS = inventory
    return compose_project


def _body(assignments: dict[str, int]) -> dict[str, Any]:
    return {
        "strategy": "manual",
        "assignments": [{"service": s, "gpu_index": g} for s, g in assignments.items()],
    }


def _post_apply(client: APIClient, assignments: dict[str, int]) -> Any:
    """Save these assignments and apply them, in one request (the Apply API's body)."""
    return client.post(
        "/api/system/gpu-config/apply",
        data=json.dumps(_body(assignments)),
        content_type="application/json",
    )


def _apply(client: APIClient, worker: CeleryWorker, assignments: dict[str, int]) -> Any:
    response = _post_apply(client, assignments)
    assert response.status_code == 202, response.json()
    body = _wait(client, response.json()["run_id"])
    assert body["run"]["status"] != "interrupted", worker.output()[-3000:]
    return body


def test_an_amd_service_gets_its_card_through_cdi_is_verified_and_rolled_back(
    mixed, stand, worker, staff_api
):
    gpu_inventory_rescan()

    first = _apply(staff_api, worker, {**ON_NVIDIA, "ai-clip": 1})

    assert first["run"]["status"] == "succeeded", first["run"]
    clip = _containers(stand)["ai-clip"]
    assert clip.cdi_devices == ("amd.com/gpu=0",)
    assert clip.env["STANDIN_AMD_GPU"] == "0", "podman resolved the amd.com/gpu spec for real"
    assert clip.env["GPUCONFIG_GPU_UUID"] == "GPU-5c88007d760374f3"
    assert clip.env["GPUCONFIG_GPU_VENDOR"] == "amd"
    assert _containers(stand)["ai-llm"].cdi_devices == ("nvidia.com/gpu=0",)
    assert first["containers"]["ai-clip"]["gpu"] == 1
    assert first["drifted"] == []

    # To the second AMD card: amd.com/gpu=1, only CLIP recreated.
    second = _apply(staff_api, worker, {**ON_NVIDIA, "ai-clip": 2})

    assert second["run"]["status"] == "succeeded", second["run"]
    assert _steps(second) == {"ai-clip": "healthy"}
    moved = _containers(stand)["ai-clip"]
    assert (moved.cdi_devices, moved.env["STANDIN_AMD_GPU"]) == (("amd.com/gpu=1",), "1")

    # A card the spec does not name: podman refuses it, the run rolls back to amd.com/gpu=1.
    third = _apply(staff_api, worker, {**ON_NVIDIA, "ai-clip": 3})

    assert third["run"]["status"] == "rolled_back", third["run"]
    assert "unresolvable CDI devices amd.com/gpu=2" in third["run"]["output"]
    back = _containers(stand)["ai-clip"]
    assert back.running
    assert back.cdi_devices == ("amd.com/gpu=1",), "back on its previous AMD GPU"


def test_apply_refuses_a_rocm_service_pinned_to_an_nvidia_gpu(mixed, stand, staff_api):
    gpu_inventory_rescan()
    response = staff_api.put(
        "/api/system/gpu-config",
        data=json.dumps(_body({**ON_NVIDIA, "ai-clip": 0})),
        content_type="application/json",
    )
    assert response.status_code == 200
    warning = (
        "ai-clip runs on ROCm (gpuconfig.accelerator: rocm) but GPU 0 is an NVIDIA GPU; "
        "pin it to an AMD GPU"
    )
    assert warning in response.json()["warnings"]
    before = {name: state.id for name, state in _containers(stand).items()}

    refused = _post_apply(staff_api, {**ON_NVIDIA, "ai-clip": 0})

    assert refused.status_code == 400
    assert refused.json()["error"] == f"Cannot apply: {warning}. Nothing was changed."
    assert ApplyRun.objects.count() == 0
    assert {name: state.id for name, state in _containers(stand).items()} == before
