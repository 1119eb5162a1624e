"""The inventory keeps each GPU's vendor, its container index and render node, leaves an
integrated GPU out of planning until the operator includes it, and keeps one vendor's GPUs
when only that vendor's source fails (issue 22)."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devices.models import GpuDevice
from devices.services import gpu_inventory_rescan, reset_sampler

if TYPE_CHECKING:
    from devices.tests.conftest import FakeNvml

pytestmark = pytest.mark.django_db

MIXED = [
    {
        "index": 0,
        "name": "NVIDIA RTX A5500",
        "vram_total_mb": 24564,
        "vram_used_mb": 100,
        "compute_capability": "8.6",
    },
    {
        "index": 1,
        "vendor": "amd",
        "device_index": 0,
        "name": "AMD Radeon RX 7800 XT",
        "vram_total_mb": 16368,
        "vram_used_mb": 174,
        "compute_capability": "gfx1101",
        "render_node": "/dev/dri/renderD128",
        "pci_bus": "0000:04:00.0",
    },
    {
        # gpustack#4848: a Strix Halo APU whose VRAM is a 512 MiB BIOS carve-out.
        "index": 2,
        "vendor": "amd",
        "device_index": 1,
        "name": "AMD Radeon 8060S",
        "vram_total_mb": 512,
        "vram_used_mb": 40,
        "compute_capability": "gfx1151",
        "render_node": "/dev/dri/renderD129",
        "integrated": True,
    },
]


@pytest.fixture
def mixed_host(settings, tmp_path: Path) -> Path:
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps({"gpus": MIXED}))
    settings.GPUCONFIG_SIMULATED_GPUS = path
    return path


def test_rescan_stores_vendor_container_index_and_render_node(mixed_host: Path) -> None:
    gpu_inventory_rescan()

    rows = list(
        GpuDevice.objects.values_list(
            "gpu_index", "vendor", "device_index", "render_node", "integrated", "planned"
        )
    )
    assert rows == [
        (0, "nvidia", None, "", False, True),
        (1, "amd", 0, "/dev/dri/renderD128", False, True),
        (2, "amd", 1, "/dev/dri/renderD129", True, False),
    ]


def test_the_gpus_api_shows_each_gpus_vendor(mixed_host: Path, member_api) -> None:
    gpu_inventory_rescan()

    body = member_api.get("/api/system/gpus", HTTP_ACCEPT="application/json").json()

    assert [
        (g["index"], g["vendor"], g["device_index"], g["integrated"]) for g in body["gpus"]
    ] == [
        (0, "nvidia", 0, False),
        (1, "amd", 0, False),
        (2, "amd", 1, True),
    ]


def test_a_failed_amd_source_does_not_mark_the_amd_gpus_disappeared(
    settings, fake_nvml: FakeNvml, bin_dir: Path
) -> None:
    # First scan: NVML's two GPUs and rocm-smi's RX 7800 XT (a recording).
    settings.GPUCONFIG_SIMULATED_GPUS = None
    fake_nvml.add_reference_box()
    recording = Path(__file__).parent / "fixtures/rocm/rocm-smi-rx7800xt-gpustack.json"
    script = bin_dir / "rocm-smi"
    script.write_text(f"#!{sys.executable}\nprint(open({str(recording)!r}).read())\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    assert gpu_inventory_rescan().added == [0, 1, 2]

    # Then rocm-smi breaks (garbage): the NVIDIA GPUs are read, the AMD one is kept.
    script.write_text(f"#!{sys.executable}\nprint('Segmentation fault')\n")
    reset_sampler()
    result = gpu_inventory_rescan()

    assert result.disappeared == []
    assert "rocm-smi printed something that is not JSON" in result.sample.message
    assert [r.index for r in result.sample.readings] == [0, 1, 2]
    assert list(GpuDevice.objects.values_list("vendor", "present")) == [
        ("nvidia", True),
        ("nvidia", True),
        ("amd", True),
    ]
