"""Tests for devices.detection.simulated: real files, the shipped reference one included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devices.detection.simulated import read_simulated, simulated_uuid
from devices.detection.types import DetectionError, GpuReading
from devices.tests.detection_support import A5500_UUID, REFERENCE_FILE


def test_shipped_reference_file_is_the_design_hardware() -> None:
    gpus = read_simulated(REFERENCE_FILE)

    assert [
        (g.index, g.name, g.vram_total_mb, g.vram_used_mb, g.compute_capability) for g in gpus
    ] == [
        (0, "NVIDIA RTX A5500", 24564, 19304, "8.6"),
        (1, "NVIDIA RTX A400", 4094, 329, "8.6"),
    ]
    assert [g.uuid for g in gpus] == [simulated_uuid(0), simulated_uuid(1)]
    for gpu in gpus:
        assert gpu.utilization_percent is not None and 0 <= gpu.utilization_percent <= 100
        assert gpu.temperature_c is not None and 20 <= gpu.temperature_c <= 95
        assert gpu.power_w is not None and gpu.power_w > 0


def test_simulated_minimal_entries_get_stable_fake_uuids(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    path.write_text(
        json.dumps(
            {
                "gpus": [
                    {
                        "index": 1,
                        "name": "RTX A400",
                        "vram_total_mb": 4094,
                        "vram_used_mb": 329,
                        "compute_capability": "8.6",
                    },
                    {
                        "index": 0,
                        "name": "RTX A5500",
                        "vram_total_mb": 24564,
                        "vram_used_mb": 19304,
                        "compute_capability": "8.6",
                    },
                ]
            }
        )
    )

    gpus = read_simulated(path)

    assert [(g.index, g.uuid) for g in gpus] == [
        (0, "GPU-00000000-0000-0000-0000-000000000000"),
        (1, "GPU-00000000-0000-0000-0000-000000000001"),
    ]
    assert gpus[1] == GpuReading(1, simulated_uuid(1), "RTX A400", 4094, 329, "8.6")


def test_simulated_accepts_nulls_the_api_can_report(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    entry = {
        "index": 0,
        "name": "GRID vGPU",
        "vram_total_mb": None,
        "vram_used_mb": None,
        "compute_capability": None,
        "power_w": None,
        "temperature_c": None,
    }
    path.write_text(json.dumps({"gpus": [entry]}))

    (gpu,) = read_simulated(path)

    assert (gpu.vram_total_mb, gpu.compute_capability, gpu.power_w) == (None, None, None)


def test_simulated_empty_list_is_a_machine_without_gpus(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    path.write_text('{"gpus": []}')

    assert read_simulated(path) == ()


_DELETE = object()


def _entry(**changes: Any) -> dict[str, Any]:
    """A valid simulated entry with ``changes`` applied (``_DELETE`` removes a key)."""
    entry: dict[str, Any] = {
        "index": 0,
        "name": "NVIDIA RTX A5500",
        "vram_total_mb": 24564,
        "vram_used_mb": 19304,
        "compute_capability": "8.6",
    }
    for key, value in changes.items():
        if value is _DELETE:
            del entry[key]
        else:
            entry[key] = value
    return entry


_A400 = {
    "index": 1,
    "name": "NVIDIA RTX A400",
    "vram_total_mb": 4094,
    "vram_used_mb": 329,
    "compute_capability": "8.6",
}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param([], "the top level must be an object", id="top-level-list"),
        pytest.param({}, 'the top-level "gpus" list is missing', id="no-gpus-key"),
        pytest.param({"gpus": {}}, '"gpus" must be a list, not an object', id="gpus-not-list"),
        pytest.param(
            {"gpus": [], "source": "nvml"},
            "unknown top-level key(s) 'source'; only \"gpus\" is allowed",
            id="unknown-top-level-key",
        ),
        pytest.param(
            {"gpus": [_A400, 7]}, "gpus[1] must be an object, not a number", id="entry-not-object"
        ),
        pytest.param(
            {"gpus": [_entry(index=_DELETE)]},
            "gpus[0].index: required field is missing",
            id="missing-index",
        ),
        pytest.param(
            {"gpus": [_A400, _entry(vram_used_mb=_DELETE, index=0)]},
            "gpus[1].vram_used_mb: required field is missing",
            id="missing-used",
        ),
        pytest.param(
            {"gpus": [_entry(index="0")]},
            'gpus[0].index: must be a whole number >= 0 (got "0")',
            id="index-string",
        ),
        pytest.param(
            {"gpus": [_entry(index=-1)]},
            "gpus[0].index: must be a whole number >= 0 (got -1)",
            id="index-negative",
        ),
        pytest.param(
            {"gpus": [_entry(index=True)]},
            "gpus[0].index: must be a whole number >= 0 (got true)",
            id="index-bool",
        ),
        pytest.param(
            {"gpus": [_entry(vram_total_mb=24.5)]},
            "gpus[0].vram_total_mb: must be a whole number >= 0, or null (got 24.5)",
            id="total-float",
        ),
        pytest.param(
            {"gpus": [_entry(vram_used_mb=30000)]},
            "gpus[0].vram_used_mb: must not exceed vram_total_mb (24564) (got 30000)",
            id="used-over-total",
        ),
        pytest.param(
            {"gpus": [_entry(name="  ")]},
            'gpus[0].name: must be a non-empty string (got "  ")',
            id="blank-name",
        ),
        pytest.param(
            {"gpus": [_entry(compute_capability=8.6)]},
            'gpus[0].compute_capability: must be a string like "8.6", or null (got 8.6)',
            id="capability-number",
        ),
        pytest.param(
            {"gpus": [_entry(compute_capability="sm_86")]},
            'gpus[0].compute_capability: must be a string like "8.6", or null (got "sm_86")',
            id="capability-format",
        ),
        pytest.param(
            {"gpus": [_entry(uuid="my-gpu")]},
            'gpus[0].uuid: must be a string like "GPU-00000000-0000-0000-0000-000000000000"',
            id="uuid-format",
        ),
        pytest.param(
            {"gpus": [_entry(utilization_percent=101)]},
            "gpus[0].utilization_percent: must be at most 100 (got 101)",
            id="utilization-over-100",
        ),
        pytest.param(
            {"gpus": [_entry(temperature_c="hot")]},
            'gpus[0].temperature_c: must be a whole number >= 0, or null (got "hot")',
            id="temperature-string",
        ),
        pytest.param(
            {"gpus": [_entry(power_w=-3)]},
            "gpus[0].power_w: must be a number >= 0, or null (got -3)",
            id="power-negative",
        ),
        pytest.param(
            {"gpus": [_entry(vram_totl_mb=1)]},
            "gpus[0]: unknown key(s) 'vram_totl_mb'; allowed keys are index, name,",
            id="unknown-key",
        ),
        pytest.param(
            {"gpus": [_A400, _entry(index=1)]},
            "gpus[1].index: 1 is already used by gpus[0]; indexes must be unique",
            id="duplicate-index",
        ),
        pytest.param(
            {"gpus": [_entry(uuid=A5500_UUID), _entry(index=1, uuid=A5500_UUID)]},
            f"gpus[1].uuid: {A5500_UUID} is already used by gpus[0]; UUIDs must be unique",
            id="duplicate-uuid",
        ),
    ],
)
def test_simulated_rejects_malformed_documents(
    tmp_path: Path, document: object, message: str
) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(document, indent=2))

    with pytest.raises(DetectionError) as caught:
        read_simulated(path)

    assert str(caught.value).startswith(f"Simulated GPU file {path}")
    assert message in str(caught.value)


def test_simulated_json_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    # A missing colon: the json module words this the same on every supported Python
    # (trailing commas, say, are worded differently from 3.13 on).
    path.write_text('{\n  "gpus": [\n    {"index" 0}\n  ]\n}\n')

    with pytest.raises(DetectionError) as caught:
        read_simulated(path)

    assert str(caught.value) == (
        f"Simulated GPU file {path} is not valid JSON: Expecting ':' delimiter at line 3 column 14."
    )


def test_simulated_duplicate_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"gpus": [{"index": 0, "index": 1}]}')

    with pytest.raises(DetectionError, match="key 'index' appears twice"):
        read_simulated(path)


def test_simulated_nan_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"gpus": [_entry(power_w=float("nan"))]}))

    with pytest.raises(DetectionError, match="is not valid JSON: NaN is not a JSON number"):
        read_simulated(path)


def test_simulated_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"

    with pytest.raises(DetectionError) as caught:
        read_simulated(path)

    assert str(caught.value) == f"Simulated GPU file {path} does not exist."


def test_simulated_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"gpus": [{"name": "caf\xe9"}]}')

    with pytest.raises(DetectionError, match=r"is not UTF-8 text \(byte offset 23\)"):
        read_simulated(path)
