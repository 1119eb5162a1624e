"""Tests for devices.detection.nvml: the ``pynvml`` functions are replaced (``fake_nvml`` in
conftest.py); everything above them runs for real.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pynvml
import pytest

from devices.detection.nvml import NvmlUnavailable, read_nvml
from devices.detection.types import DetectionError
from devices.tests.detection_support import REFERENCE_BOX, real_nvml_library_loads

if TYPE_CHECKING:
    from devices.tests.conftest import FakeNvml


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


@pytest.mark.skipif(real_nvml_library_loads(), reason="this machine has a real NVML library")
def test_real_nvml_is_unavailable_on_a_machine_without_the_library() -> None:
    with pytest.raises(NvmlUnavailable, match="NVML library not found"):
        read_nvml()
