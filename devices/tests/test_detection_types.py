"""Tests for devices.detection.types: what every source reports."""

from __future__ import annotations

import json
from pathlib import Path

from devices.detection.simulated import read_simulated
from devices.tests.detection_support import A400_UUID, REFERENCE_BOX


def test_as_api_dict_has_exactly_the_api_keys() -> None:
    assert REFERENCE_BOX[1].as_api_dict() == {
        "index": 1,
        "uuid": A400_UUID,
        "name": "NVIDIA RTX A400",
        "vram_total_mb": 4094,
        "vram_used_mb": 329,
        "compute_capability": "8.6",
        "utilization_percent": 2,
        "temperature_c": 38,
        "power_w": 8.93,
        "vram_reserved_mb": None,
        "vendor": "nvidia",
        "device_index": 1,
        "render_node": None,
        "pci_bus": None,
        "integrated": False,
    }


def test_as_api_dict_round_trips_through_a_simulated_file(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps({"gpus": [gpu.as_api_dict() for gpu in REFERENCE_BOX]}))

    assert read_simulated(path) == REFERENCE_BOX
