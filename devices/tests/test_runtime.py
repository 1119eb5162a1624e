"""Tests for devices.runtime.get_target_gpu, with only the pynvml functions faked.

The scenarios are the ones a service meets in its container: under CDI it sees just its
assigned GPU (local index 0 whatever the host index), without CDI it sees all of them,
and the assigned GPU may be gone or broken.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pynvml
import pytest

from devices import runtime
from devices.runtime import NoGpuAvailableError, get_target_gpu

if TYPE_CHECKING:
    from devices.tests.conftest import FakeNvml

A5500_UUID = "GPU-5f3c1b2e-8a4d-4c6e-9b1f-2d7a0e4c8b13"
A400_UUID = "GPU-a91e6d04-37c2-4f85-b0d9-6e2f1c8a5d47"
H100_UUID = "GPU-2b8e4f61-c0d3-4a97-8e15-7f9a3b6d2c80"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without the variables the function reads."""
    for name in (
        runtime.UUID_ENV,
        runtime.INDEX_ENV,
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
    ):
        monkeypatch.delenv(name, raising=False)


def assign(monkeypatch: pytest.MonkeyPatch, uuid: str, host_index: int) -> None:
    """Set the variables the generated override gives a service."""
    monkeypatch.setenv(runtime.UUID_ENV, uuid)
    monkeypatch.setenv(runtime.INDEX_ENV, str(host_index))


def test_cdi_container_sees_only_its_gpu_as_zero(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Host index 1 (the A400), but CDI injected only that GPU: CUDA calls it 0.
    fake_nvml.add_gpu("NVIDIA RTX A400", A400_UUID, total_mib=4094, used_mib=329)
    assign(monkeypatch, A400_UUID, 1)

    assert get_target_gpu() == 0
    assert caplog.records == []
    assert fake_nvml.init_calls == fake_nvml.shutdown_calls == 1


def test_all_gpus_visible_returns_the_assigned_position(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml.add_reference_box()
    assign(monkeypatch, A400_UUID, 1)

    assert get_target_gpu() == 1
    # Several GPUs: CUDA is told to number them like NVML does.
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_uuid_match_ignores_case_and_bytes(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml.add_gpu("NVIDIA RTX A5500", A5500_UUID.encode())
    fake_nvml.add_gpu("NVIDIA RTX A400", A400_UUID.encode())
    assign(monkeypatch, A400_UUID.upper(), 1)

    assert get_target_gpu() == 1


def test_assigned_gpu_missing_falls_back_to_most_free_memory(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A5500 has 5260 MiB free, A400 3765 MiB: the A5500 wins.
    fake_nvml.add_reference_box()
    assign(monkeypatch, H100_UUID, 3)

    with caplog.at_level(logging.WARNING, logger="devices.runtime"):
        assert get_target_gpu() == 0

    assert [record.getMessage() for record in caplog.records] == [
        f"Assigned GPU {H100_UUID} (host index 3) unavailable: not among the 2 visible GPU(s) "
        f"({A5500_UUID}, {A400_UUID}); falling back to GPU 0 (5260 MiB free)"
    ]
    assert caplog.records[0].levelno == logging.WARNING


def test_fallback_prefers_free_memory_over_position(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml.add_gpu("NVIDIA RTX A5500", A5500_UUID, total_mib=24564, used_mib=24000)
    fake_nvml.add_gpu("NVIDIA RTX A400", A400_UUID, total_mib=4094, used_mib=94)
    assign(monkeypatch, H100_UUID, 0)

    assert get_target_gpu() == 1
    assert "falling back to GPU 1 (4000 MiB free)" in caplog.text


def test_assigned_gpu_lost_falls_back_with_the_reason(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The A400 still answers to its UUID but is lost; the A5500 cannot report memory.
    a5500, a400 = fake_nvml.add_reference_box()
    a5500.errors["nvmlDeviceGetMemoryInfo"] = pynvml.NVMLError_NotSupported()
    a400.errors["nvmlDeviceGetMemoryInfo"] = pynvml.NVMLError_GpuIsLost()
    assign(monkeypatch, A400_UUID, 1)

    assert get_target_gpu() == 0
    assert caplog.messages == [
        f"Assigned GPU {A400_UUID} (host index 1) unavailable: NVML reports GPU is lost; "
        "falling back to GPU 0 (free memory unknown)"
    ]


def test_unidentifiable_gpu_keeps_its_position(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # GPU 0's UUID cannot be read: it is not chosen, but still counts, so the A400 stays
    # CUDA device 1.
    a5500, _ = fake_nvml.add_reference_box()
    a5500.errors["nvmlDeviceGetUUID"] = pynvml.NVMLError_GpuIsLost()
    assign(monkeypatch, A400_UUID, 1)

    assert get_target_gpu() == 1

    assign(monkeypatch, A5500_UUID, 0)
    assert get_target_gpu() == 1
    assert (
        f"unavailable: not among the 2 visible GPU(s) (<NVML device 0>, {A400_UUID}); "
        "falling back to GPU 1 (3765 MiB free)"
    ) in caplog.text


def test_no_uuid_assigned_uses_the_first_gpu(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml.add_reference_box()

    assert get_target_gpu() == 0
    assert caplog.records == []


def test_no_uuid_assigned_skips_a_broken_first_gpu(fake_nvml: FakeNvml) -> None:
    a5500, _ = fake_nvml.add_reference_box()
    a5500.errors["nvmlDeviceGetHandleByIndex"] = pynvml.NVMLError_GpuIsLost()

    assert get_target_gpu() == 1


def test_no_gpu_visible_raises(fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    assign(monkeypatch, A400_UUID, 1)

    with pytest.raises(NoGpuAvailableError) as caught:
        get_target_gpu()

    assert str(caught.value) == (
        f"No GPU available for assigned GPU {A400_UUID} (host index 1): no GPU is visible."
    )
    assert isinstance(caught.value, RuntimeError)


def test_every_gpu_broken_raises(fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.add_gpu("NVIDIA RTX A400", A400_UUID).errors["nvmlDeviceGetHandleByIndex"] = (
        pynvml.NVMLError_GpuIsLost()
    )

    with pytest.raises(NoGpuAvailableError, match=r"no GPU is usable \(GPU 0: GPU is lost\)"):
        get_target_gpu()

    assign(monkeypatch, A400_UUID, 1)
    with pytest.raises(NoGpuAvailableError, match="and no other GPU is usable"):
        get_target_gpu()


@pytest.mark.parametrize(
    "error",
    [pynvml.NVMLError_LibraryNotFound(), pynvml.NVMLError_DriverNotLoaded()],
    ids=["library-not-found", "driver-not-loaded"],
)
def test_nvml_unusable_raises(fake_nvml: FakeNvml, error: Exception) -> None:
    fake_nvml.init_error = error

    with pytest.raises(NoGpuAvailableError) as caught:
        get_target_gpu()

    assert str(caught.value) == f"No GPU available: NVML cannot be used ({error})."
    assert fake_nvml.shutdown_calls == 0


def test_nvml_count_failure_raises_and_shuts_down(fake_nvml: FakeNvml) -> None:
    fake_nvml.count_error = pynvml.NVMLError_Unknown()

    with pytest.raises(NoGpuAvailableError, match=r"cannot count the GPUs \(Unknown Error\)"):
        get_target_gpu()
    assert fake_nvml.shutdown_calls == 1


def test_cuda_visible_devices_renumbers(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CUDA_VISIBLE_DEVICES=1 makes the A400 CUDA device 0, though NVML still lists both.
    fake_nvml.add_reference_box()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assign(monkeypatch, A400_UUID, 1)

    assert get_target_gpu() == 0


def test_cuda_visible_devices_by_uuid_prefix_and_order(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml.add_reference_box()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{A400_UUID[:12]},{A5500_UUID}")
    assign(monkeypatch, A5500_UUID, 0)

    assert get_target_gpu() == 1


def test_cuda_visible_devices_hiding_the_assigned_gpu_falls_back(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # CUDA stops at the first entry naming no device ("7"), so only GPU 0 is visible.
    fake_nvml.add_reference_box()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,7,1")
    assign(monkeypatch, A400_UUID, 1)

    assert get_target_gpu() == 0
    assert f"not among the 1 visible GPU(s) ({A5500_UUID})" in caplog.text


def test_empty_cuda_visible_devices_means_no_gpu(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml.add_reference_box()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")

    with pytest.raises(NoGpuAvailableError, match="no GPU is visible"):
        get_target_gpu()


def test_explicit_non_pci_cuda_order_is_warned_about_and_kept(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml.add_reference_box()
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")

    assert get_target_gpu() == 0
    assert os.environ["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"
    assert "set CUDA_DEVICE_ORDER=PCI_BUS_ID" in caplog.text


def test_single_gpu_leaves_cuda_order_alone(fake_nvml: FakeNvml) -> None:
    fake_nvml.add_gpu("NVIDIA H100 80GB HBM3", H100_UUID)

    assert get_target_gpu() == 0
    assert "CUDA_DEVICE_ORDER" not in os.environ


def test_module_stands_alone(tmp_path: Path) -> None:
    # Services copy runtime.py next to their code: it must import without Django or any
    # GPU Config module, and without loading pynvml until it is called.
    copy = tmp_path / "gpu_runtime.py"
    copy.write_text((Path(runtime.__file__)).read_text())
    check = (
        "import sys\n"
        "sys.path.insert(0, '.')\n"
        "import gpu_runtime\n"
        "assert 'pynvml' not in sys.modules, 'pynvml imported eagerly'\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('django', 'devices')]\n"
        "print(gpu_runtime.get_target_gpu.__name__)\n"
    )

    result = subprocess.run(
        [sys.executable, "-I", "-c", check],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "get_target_gpu"
