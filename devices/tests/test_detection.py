"""Tests for devices.detection.

* NVML: the ``pynvml`` functions are replaced (``fake_nvml`` in conftest.py).
* nvidia-smi: a real executable named ``nvidia-smi`` is put on ``PATH``; it prints a file
  from ``fixtures/nvidia-smi`` (hand-written, see ``fixtures/README.md``) and records its
  arguments, so the subprocess call, the CSV parsing and the retries run for real.
* Simulated files: real files, the shipped reference one included.
"""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pynvml
import pytest

from devices.detection import (
    SMI_QUERY_FIELDS,
    Detection,
    DetectionError,
    DetectionSource,
    GpuReading,
    NvidiaSmiUnavailable,
    NvmlUnavailable,
    detect,
    read_nvidia_smi,
    read_nvml,
    read_simulated,
    simulated_uuid,
)

if TYPE_CHECKING:
    from devices.tests.conftest import FakeNvml

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"
REFERENCE_FILE = Path(__file__).parents[1] / "simulated" / "reference-gpus.json"

A5500_UUID = "GPU-5f3c1b2e-8a4d-4c6e-9b1f-2d7a0e4c8b13"
A400_UUID = "GPU-a91e6d04-37c2-4f85-b0d9-6e2f1c8a5d47"

REFERENCE_BOX = (
    GpuReading(
        index=0,
        uuid=A5500_UUID,
        name="NVIDIA RTX A5500",
        vram_total_mb=24564,
        vram_used_mb=19304,
        compute_capability="8.6",
        utilization_percent=47,
        temperature_c=61,
        power_w=142.71,
    ),
    GpuReading(
        index=1,
        uuid=A400_UUID,
        name="NVIDIA RTX A400",
        vram_total_mb=4094,
        vram_used_mb=329,
        compute_capability="8.6",
        utilization_percent=2,
        temperature_c=38,
        power_w=8.93,
    ),
)


# --------------------------------------------------------------------------------------
# A real nvidia-smi stand-in
# --------------------------------------------------------------------------------------

# Runs under the test's own interpreter (absolute shebang) because PATH holds only the
# fake's directory. Behaviour comes from a JSON file next to it.
_FAKE_SMI = """#!{python}
import json, sys, time
from pathlib import Path

here = Path(__file__).parent
config = json.loads((here / "config.json").read_text())
with open(here / "calls.jsonl", "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
query = next((a for a in sys.argv[1:] if a.startswith("--query-gpu=")), "")
fields = query.split("=", 1)[1].split(",") if query else []
for rejected in config["reject_fields"]:
    if rejected in fields:
        sys.stdout.write(Path(config["reject_output"]).read_text())
        sys.exit(2)
time.sleep(config["sleep_s"])
if config["stdout_file"]:
    sys.stdout.write(Path(config["stdout_file"]).read_text())
if config["stderr_file"]:
    sys.stderr.write(Path(config["stderr_file"]).read_text())
sys.exit(config["exit_code"])
"""


@dataclass
class FakeSmi:
    """Handle on the installed fake: its path and the argument lists it was run with."""

    path: Path

    @property
    def calls(self) -> list[list[str]]:
        log = self.path.parent / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory that is the whole of PATH, so a real nvidia-smi can never be found."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", str(directory))
    return directory


def install_smi(
    bin_dir: Path,
    stdout: str | None = None,
    *,
    stderr: str | None = None,
    exit_code: int = 0,
    reject_fields: tuple[str, ...] = (),
    reject_output: str = "old-driver-rejects-compute-cap.txt",
    sleep_s: float = 0,
) -> FakeSmi:
    """Put an executable ``nvidia-smi`` in ``bin_dir`` printing the named fixture files."""
    config = {
        "stdout_file": str(FIXTURES / stdout) if stdout else None,
        "stderr_file": str(FIXTURES / stderr) if stderr else None,
        "exit_code": exit_code,
        "reject_fields": list(reject_fields),
        "reject_output": str(FIXTURES / reject_output),
        "sleep_s": sleep_s,
    }
    (bin_dir / "config.json").write_text(json.dumps(config))
    script = bin_dir / "nvidia-smi"
    script.write_text(_FAKE_SMI.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return FakeSmi(script)


def smi_arguments(fields: tuple[str, ...] = SMI_QUERY_FIELDS) -> list[str]:
    """The arguments (after the program name) nvidia-smi should be run with."""
    return [f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]


# --------------------------------------------------------------------------------------
# GpuReading
# --------------------------------------------------------------------------------------


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
    }


def test_as_api_dict_round_trips_through_a_simulated_file(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps({"gpus": [gpu.as_api_dict() for gpu in REFERENCE_BOX]}))

    assert read_simulated(path) == REFERENCE_BOX


# --------------------------------------------------------------------------------------
# Simulated file
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# NVML
# --------------------------------------------------------------------------------------


def test_nvml_reads_the_reference_box(fake_nvml: FakeNvml) -> None:
    fake_nvml.add_reference_box()

    assert read_nvml() == REFERENCE_BOX
    assert fake_nvml.init_calls == fake_nvml.shutdown_calls == 1
    assert fake_nvml.temperature_sensors == [pynvml.NVML_TEMPERATURE_GPU] * 2


def test_nvml_accepts_bytes_names_and_converts_units(fake_nvml: FakeNvml) -> None:
    # Older nvidia-ml-py returns bytes; memory arrives in bytes, power in milliwatts.
    fake_nvml.add_gpu(
        b"NVIDIA H100 80GB HBM3",
        b"GPU-2b8e4f61-c0d3-4a97-8e15-7f9a3b6d2c80",
        total_mib=81559,
        used_mib=1,
        capability=(9, 0),
        power_mw=71_240,
    )

    (gpu,) = read_nvml()

    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.uuid == "GPU-2b8e4f61-c0d3-4a97-8e15-7f9a3b6d2c80"
    assert (gpu.vram_total_mb, gpu.vram_used_mb) == (81559, 1)
    assert gpu.compute_capability == "9.0"
    assert gpu.power_w == pytest.approx(71.24)


def test_nvml_reports_unsupported_readings_as_none(fake_nvml: FakeNvml) -> None:
    _, a400 = fake_nvml.add_reference_box()
    a400.errors["nvmlDeviceGetTemperature"] = pynvml.NVMLError_NotSupported()
    a400.errors["nvmlDeviceGetPowerUsage"] = pynvml.NVMLError_NotSupported()
    a400.errors["nvmlDeviceGetUtilizationRates"] = pynvml.NVMLError_NoPermission()

    first, second = read_nvml()

    assert first == REFERENCE_BOX[0]
    assert (second.temperature_c, second.power_w, second.utilization_percent) == (None, None, None)
    assert (second.name, second.vram_total_mb, second.compute_capability) == (
        "NVIDIA RTX A400",
        4094,
        "8.6",
    )


def test_nvml_memory_not_supported_is_none(fake_nvml: FakeNvml) -> None:
    gpu = fake_nvml.add_gpu("GRID A100-40C", "GPU-2b8e4f61-c0d3-4a97-8e15-7f9a3b6d2c80")
    gpu.errors["nvmlDeviceGetMemoryInfo"] = pynvml.NVMLError_NotSupported()

    (reading,) = read_nvml()

    assert (reading.vram_total_mb, reading.vram_used_mb) == (None, None)


def test_nvml_gpu_lost_mid_scan_names_the_gpu(fake_nvml: FakeNvml) -> None:
    _, a400 = fake_nvml.add_reference_box()
    a400.errors["nvmlDeviceGetMemoryInfo"] = pynvml.NVMLError_GpuIsLost()

    with pytest.raises(DetectionError) as caught:
        read_nvml()

    assert not isinstance(caught.value, NvmlUnavailable)
    assert str(caught.value) == "NVML failed while reading GPU 1: GPU is lost."
    assert fake_nvml.shutdown_calls == 1


def test_nvml_lost_handle_fails_the_scan(fake_nvml: FakeNvml) -> None:
    fake_nvml.add_reference_box()[0].errors["nvmlDeviceGetHandleByIndex"] = (
        pynvml.NVMLError_GpuIsLost()
    )

    with pytest.raises(DetectionError, match="NVML failed while reading GPU 0: GPU is lost"):
        read_nvml()
    assert fake_nvml.shutdown_calls == 1


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (pynvml.NVMLError_LibraryNotFound(), "NVML library not found"),
        (pynvml.NVMLError_DriverNotLoaded(), "NVIDIA driver not loaded"),
    ],
)
def test_nvml_missing_library_or_driver_is_unavailable(
    fake_nvml: FakeNvml, error: Exception, reason: str
) -> None:
    fake_nvml.init_error = error

    with pytest.raises(NvmlUnavailable) as caught:
        read_nvml()

    assert caught.value.reason == reason
    assert str(caught.value) == f"NVML unavailable: {reason}"
    # Shutdown after a failed init would itself fail ("Uninitialized").
    assert fake_nvml.shutdown_calls == 0


def test_nvml_other_init_error_is_a_detection_error(fake_nvml: FakeNvml) -> None:
    # After a driver upgrade without reboot: NVML is there but refuses to work.
    fake_nvml.init_error = pynvml.NVMLError_LibRmVersionMismatch()

    with pytest.raises(DetectionError) as caught:
        read_nvml()

    assert not isinstance(caught.value, NvmlUnavailable)
    assert str(caught.value) == (
        "NVML could not be initialised: RM has detected an NVML/RM version mismatch."
    )


def test_nvml_count_failure(fake_nvml: FakeNvml) -> None:
    fake_nvml.count_error = pynvml.NVMLError_Unknown()

    with pytest.raises(DetectionError, match="NVML could not count the GPUs: Unknown Error"):
        read_nvml()
    assert fake_nvml.shutdown_calls == 1


def test_nvml_failed_shutdown_does_not_lose_the_readings(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml.add_reference_box()
    fake_nvml.shutdown_error = pynvml.NVMLError_Uninitialized()

    assert read_nvml() == REFERENCE_BOX
    assert "nvmlShutdown failed: Uninitialized" in caplog.text


def test_nvml_no_gpus(fake_nvml: FakeNvml) -> None:
    assert read_nvml() == ()


def _real_nvml_library_loads() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_real_nvml_library_loads(), reason="this machine has a real NVML library")
def test_real_nvml_is_unavailable_on_a_machine_without_the_library() -> None:
    with pytest.raises(NvmlUnavailable, match="NVML library not found"):
        read_nvml()


# --------------------------------------------------------------------------------------
# nvidia-smi
# --------------------------------------------------------------------------------------


def test_smi_reads_the_reference_box(bin_dir: Path) -> None:
    fake = install_smi(bin_dir, "a5500-a400.csv")

    assert read_nvidia_smi() == REFERENCE_BOX
    assert fake.calls == [smi_arguments()]


def test_smi_reads_an_h100(bin_dir: Path) -> None:
    install_smi(bin_dir, "h100.csv")

    assert read_nvidia_smi() == (
        GpuReading(
            index=0,
            uuid="GPU-2b8e4f61-c0d3-4a97-8e15-7f9a3b6d2c80",
            name="NVIDIA H100 80GB HBM3",
            vram_total_mb=81559,
            vram_used_mb=1,
            compute_capability="9.0",
            utilization_percent=0,
            temperature_c=33,
            power_w=71.24,
        ),
    )


def test_smi_explicit_executable_path(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install_smi(bin_dir, "h100.csv")
    monkeypatch.setenv("PATH", "")

    (gpu,) = read_nvidia_smi(str(fake.path))

    assert gpu.name == "NVIDIA H100 80GB HBM3"


def test_smi_not_available_values_become_none(bin_dir: Path) -> None:
    install_smi(bin_dir, "not-available.csv")

    first, second = read_nvidia_smi()

    assert first == REFERENCE_BOX[0]
    assert second == GpuReading(
        index=1,
        uuid=A400_UUID,
        name="NVIDIA RTX A400",
        vram_total_mb=4094,
        vram_used_mb=None,
        compute_capability="8.6",
    )


def test_smi_garbage_quotes_the_bad_line(bin_dir: Path) -> None:
    install_smi(bin_dir, "garbage.csv")

    with pytest.raises(DetectionError) as caught:
        read_nvidia_smi()

    bad_line = (FIXTURES / "garbage.csv").read_text().splitlines()[1]
    assert str(caught.value) == (
        f"nvidia-smi printed an unexpected line (memory.total is '4 GiB', not a number): "
        f"{bad_line!r}"
    )


def test_smi_gpu_lost_is_a_detection_error(bin_dir: Path) -> None:
    install_smi(bin_dir, "gpu-lost.csv")

    with pytest.raises(DetectionError, match="nvidia-smi reports GPU 1 as GPU is lost"):
        read_nvidia_smi()


def test_smi_old_driver_retries_without_compute_cap(
    bin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = install_smi(
        bin_dir, "a5500-a400-without-compute-cap.csv", reject_fields=("compute_cap",)
    )

    gpus = read_nvidia_smi()

    assert gpus == tuple(
        GpuReading(**{**gpu.as_api_dict(), "compute_capability": None}) for gpu in REFERENCE_BOX
    )
    without = tuple(field for field in SMI_QUERY_FIELDS if field != "compute_cap")
    assert fake.calls == [smi_arguments(), smi_arguments(without)]
    assert "rejects the 'compute_cap' field" in caplog.text


def test_smi_retry_gives_up_on_required_fields(bin_dir: Path, tmp_path: Path) -> None:
    # A (hypothetical) nvidia-smi that rejects "uuid": nothing sensible to drop.
    rejection = FIXTURES / "old-driver-rejects-compute-cap.txt"
    custom = tmp_path / "rejects-uuid.txt"
    custom.write_text(rejection.read_text().replace("compute_cap", "uuid"))
    # An absolute path: FIXTURES / custom is custom.
    fake = install_smi(bin_dir, "h100.csv", reject_fields=("uuid",), reject_output=str(custom))

    with pytest.raises(DetectionError) as caught:
        read_nvidia_smi()

    assert str(caught.value) == (
        'nvidia-smi failed with exit status 2: Field "uuid" is not a valid field to query.'
    )
    assert len(fake.calls) == 1


def test_smi_retry_understands_other_wordings(bin_dir: Path, tmp_path: Path) -> None:
    # Drivers have not always used the same sentence; any mention of the field will do.
    custom = tmp_path / "other-wording.txt"
    custom.write_text("ERROR: Invalid field name 'compute_cap' for --query-gpu\n")
    fake = install_smi(
        bin_dir,
        "a5500-a400-without-compute-cap.csv",
        reject_fields=("compute_cap",),
        reject_output=str(custom),
    )

    assert [gpu.compute_capability for gpu in read_nvidia_smi()] == [None, None]
    assert len(fake.calls) == 2


def test_smi_nonzero_exit_reports_trimmed_stderr(bin_dir: Path) -> None:
    install_smi(bin_dir, stderr="device-handle-error.txt", exit_code=15)

    with pytest.raises(DetectionError) as caught:
        read_nvidia_smi()

    assert not isinstance(caught.value, NvidiaSmiUnavailable)
    assert str(caught.value) == (
        "nvidia-smi failed with exit status 15: "
        "Unable to determine the device handle for GPU0000:01:00.0: Unknown Error"
    )


def test_smi_driver_not_loaded_is_unavailable(bin_dir: Path) -> None:
    install_smi(bin_dir, "driver-not-loaded.txt", exit_code=9)

    with pytest.raises(NvidiaSmiUnavailable) as caught:
        read_nvidia_smi()

    assert caught.value.reason == "nvidia-smi cannot communicate with the NVIDIA driver"
    assert "Make sure that the latest NVIDIA driver is installed and running" in str(caught.value)


def test_smi_no_devices_is_an_empty_inventory(bin_dir: Path) -> None:
    install_smi(bin_dir, "no-devices.txt", exit_code=6)

    assert read_nvidia_smi() == ()


def test_smi_timeout(bin_dir: Path) -> None:
    install_smi(bin_dir, "h100.csv", sleep_s=30)

    with pytest.raises(DetectionError) as caught:
        read_nvidia_smi(timeout_s=0.5)

    assert str(caught.value) == ("nvidia-smi did not answer within 0.5 s; the driver may be hung.")


def test_smi_not_on_path(bin_dir: Path) -> None:
    with pytest.raises(NvidiaSmiUnavailable) as caught:
        read_nvidia_smi()

    assert caught.value.reason == "nvidia-smi not on PATH"


def test_smi_not_executable_is_not_found(bin_dir: Path) -> None:
    (bin_dir / "nvidia-smi").write_text("not a program")

    with pytest.raises(NvidiaSmiUnavailable, match="not on PATH"):
        read_nvidia_smi()


def test_smi_argument_is_never_given_to_a_shell(bin_dir: Path, tmp_path: Path) -> None:
    # A "name" with shell syntax must be looked up as a file name, never interpreted.
    marker = tmp_path / "pwned"
    evil = f"nvidia-smi; touch {shlex.quote(str(marker))}"

    with pytest.raises(NvidiaSmiUnavailable):
        read_nvidia_smi(evil)
    assert not marker.exists()


# --------------------------------------------------------------------------------------
# detect(): the chain
# --------------------------------------------------------------------------------------


def test_detect_simulated_wins(fake_nvml: FakeNvml) -> None:
    fake_nvml.add_reference_box()

    detection = detect(REFERENCE_FILE)

    assert detection.source is DetectionSource.SIMULATED
    assert [gpu.name for gpu in detection.gpus] == ["NVIDIA RTX A5500", "NVIDIA RTX A400"]
    assert fake_nvml.init_calls == 0


def test_detect_simulated_errors_propagate(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{")

    with pytest.raises(DetectionError, match="is not valid JSON"):
        detect(path)


def test_detect_prefers_nvml(fake_nvml: FakeNvml, bin_dir: Path) -> None:
    fake_nvml.add_reference_box()
    fake = install_smi(bin_dir, "h100.csv")

    assert detect() == Detection(DetectionSource.NVML, REFERENCE_BOX)
    assert fake.calls == []


def test_detect_falls_back_to_smi_when_nvml_library_missing(
    fake_nvml: FakeNvml, bin_dir: Path
) -> None:
    fake_nvml.init_error = pynvml.NVMLError_LibraryNotFound()
    install_smi(bin_dir, "a5500-a400.csv")

    assert detect() == Detection(
        DetectionSource.NVIDIA_SMI,
        REFERENCE_BOX,
        message="Read through nvidia-smi because NVML library not found.",
    )


def test_detect_nvml_failure_does_not_fall_back(fake_nvml: FakeNvml, bin_dir: Path) -> None:
    # A lost GPU means "this scan is wrong", not "try another tool": the caller must
    # keep its last good inventory.
    fake_nvml.add_reference_box()[1].errors["nvmlDeviceGetUUID"] = pynvml.NVMLError_GpuIsLost()
    fake = install_smi(bin_dir, "a5500-a400.csv")

    with pytest.raises(DetectionError, match="GPU 1: GPU is lost"):
        detect()
    assert fake.calls == []


def test_detect_smi_failure_propagates(fake_nvml: FakeNvml, bin_dir: Path) -> None:
    fake_nvml.init_error = pynvml.NVMLError_LibraryNotFound()
    install_smi(bin_dir, "garbage.csv")

    with pytest.raises(DetectionError, match="unexpected line"):
        detect()


def test_detect_nothing_available(fake_nvml: FakeNvml, bin_dir: Path) -> None:
    fake_nvml.init_error = pynvml.NVMLError_DriverNotLoaded()
    install_smi(bin_dir, "driver-not-loaded.txt", exit_code=9)

    assert detect() == Detection(
        DetectionSource.NONE,
        (),
        message=(
            "No GPUs detected: NVIDIA driver not loaded and "
            "nvidia-smi cannot communicate with the NVIDIA driver"
        ),
    )


@pytest.mark.skipif(_real_nvml_library_loads(), reason="this machine has a real NVML library")
def test_detect_on_this_machine_without_gpu_tools(bin_dir: Path) -> None:
    # Real pynvml, real PATH lookup: nothing is faked here.
    assert os.environ["PATH"] == str(bin_dir)

    assert detect() == Detection(
        DetectionSource.NONE,
        (),
        message="No GPUs detected: NVML library not found and nvidia-smi not on PATH",
    )
