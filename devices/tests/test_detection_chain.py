"""Tests for devices.detection.chain: which source answers ``detect()``, through the package's
public names (``from devices.detection import ...``, as the product imports them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pynvml
import pytest

from devices.detection import (
    Detection,
    DetectionError,
    DetectionSource,
    GpuVendor,
    SourceUnavailable,
    chain,
    detect,
)
from devices.tests.detection_support import (
    REFERENCE_BOX,
    REFERENCE_FILE,
    install_smi,
    real_nvml_library_loads,
)

# Why this machine (and every test machine: see the no_amd_sysfs fixture) has no AMD GPU.
NO_ROCM = "amdsmi library not found, rocm-smi not on PATH, no KFD topology in sysfs"

if TYPE_CHECKING:
    from devices.tests.conftest import FakeNvml


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
            "No GPUs detected: NVIDIA driver not loaded, "
            "nvidia-smi cannot communicate with the NVIDIA driver and no AMD GPU found "
            f"({NO_ROCM})"
        ),
    )


@pytest.mark.skipif(real_nvml_library_loads(), reason="this machine has a real NVML library")
def test_detect_on_this_machine_without_gpu_tools(bin_dir: Path) -> None:
    # Real pynvml, real PATH lookup: nothing is faked here.
    assert os.environ["PATH"] == str(bin_dir)

    assert detect() == Detection(
        DetectionSource.NONE,
        (),
        message=(
            "No GPUs detected: NVML library not found, nvidia-smi not on PATH and "
            f"no AMD GPU found ({NO_ROCM})"
        ),
    )


def test_a_further_source_is_tried_after_the_others(
    fake_nvml: FakeNvml, bin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A further source is a module of its own and one line in SOURCES;
    # when every source is unavailable, the message names each reason in order.
    class RocmSmiUnavailable(SourceUnavailable):
        source_name = "rocm-smi"

    def detect_rocm_smi(*, with_processes: bool) -> Detection:
        raise RocmSmiUnavailable("rocm-smi not on PATH")

    monkeypatch.setattr(
        chain,
        "SOURCES",
        (chain.SOURCES[0], chain.VendorSources(GpuVendor.AMD, (detect_rocm_smi,))),
    )
    fake_nvml.init_error = pynvml.NVMLError_LibraryNotFound()
    install_smi(bin_dir, "driver-not-loaded.txt", exit_code=9)

    assert detect() == Detection(
        DetectionSource.NONE,
        (),
        message=(
            "No GPUs detected: NVML library not found, nvidia-smi cannot communicate with the "
            "NVIDIA driver and rocm-smi not on PATH"
        ),
    )
