"""Tests for devices.detection.nvidia_smi, run against a real executable on ``PATH``
(``install_smi`` in detection_support.py) that prints recorded fixture files.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from devices.detection.nvidia_smi import SMI_QUERY_FIELDS, NvidiaSmiUnavailable, read_nvidia_smi
from devices.detection.types import DetectionError, GpuReading
from devices.tests.detection_support import (
    A400_UUID,
    FIXTURES,
    REFERENCE_BOX,
    install_smi,
    smi_arguments,
)


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
