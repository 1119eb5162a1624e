"""Both detection paths against a real H100's recorded answers (fixtures/h100/RECORDING.md).

NVML is replayed at its function boundary with the recorded byte values; nvidia-smi is a real
executable printing the recorded output. The two must agree on used VRAM for the same state.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pynvml
import pytest

from devices.detection import (
    DetectionError,
    DetectionSource,
    GpuProcess,
    detect,
    read_nvidia_smi,
    read_nvidia_smi_processes,
    read_nvml,
    read_nvml_scan,
)
from devices.tests.fake_smi import install_recorded_smi

if TYPE_CHECKING:
    from devices.tests.conftest import FakeNvml

H100 = Path(__file__).parent / "fixtures" / "h100"
RECORDED: dict[str, Any] = json.loads((H100 / "readings.json").read_text())
UUID = "GPU-f31de5f3-882c-7e7d-f3d1-ea0ac7c6f1fa"

IDLE_V1 = RECORDED["memory_idle"]["v1"]
IDLE_V2 = RECORDED["memory_idle"]["v2"]
# v2 was recorded idle only. While 8 GiB were held, v1 said used=9742123008; v2's used is
# v1's minus the reserve (idle, the recording shows exactly that: v1.used == v2.reserved).
HELD_V1 = {**RECORDED["memory_held_v1"], "total": IDLE_V1["total"]}
HELD_V2 = {
    "total": IDLE_V2["total"],
    "used": HELD_V1["used"] - IDLE_V2["reserved"],
    "free": HELD_V1["free"],
    "reserved": IDLE_V2["reserved"],
}


def add_h100(fake_nvml: FakeNvml, memory: dict[str, dict[str, int]], **extra: Any) -> None:
    fake_nvml.add_gpu(
        "NVIDIA H100 80GB HBM3",
        UUID,
        capability=(9, 0),
        temperature=51,
        power_mw=80_624,
        memory_bytes=memory,
        **extra,
    )


def test_recorded_v1_counts_the_driver_reserve_as_used() -> None:
    # The finding the feature rests on, straight from the recording.
    assert IDLE_V1["used"] == IDLE_V2["reserved"] == 503316480
    assert IDLE_V2["used"] == 0
    assert RECORDED["read_nvml"][0]["vram_used_mb"] == 480
    assert RECORDED["read_nvidia_smi"][0]["vram_used_mb"] == 0


def test_idle_h100_nvml_v2_and_nvidia_smi_report_the_same_used(
    fake_nvml: FakeNvml, bin_dir: Path
) -> None:
    add_h100(fake_nvml, {"v1": IDLE_V1, "v2": IDLE_V2})
    install_recorded_smi(bin_dir, {"--query-gpu=": (H100 / "nvidia-smi-query.csv", 0)})

    (nvml,) = read_nvml()
    (smi,) = read_nvidia_smi()

    assert nvml.vram_used_mb == smi.vram_used_mb == 0
    assert nvml.vram_total_mb == smi.vram_total_mb == 81559
    assert nvml.vram_reserved_mb == 480
    # nvidia-smi -q says the same: FB memory reserved 480 MiB, free 81079 MiB.
    xml = (H100 / "nvidia-smi-q.xml").read_text()
    assert "<reserved>480 MiB</reserved>" in xml
    assert "<free>81079 MiB</free>" in xml
    assert nvml.vram_free_mb == 81079
    assert fake_nvml.memory_versions == [pynvml.nvmlMemory_v2]


def test_h100_holding_8_gib_nvml_and_nvidia_smi_agree(fake_nvml: FakeNvml, bin_dir: Path) -> None:
    add_h100(fake_nvml, {"v1": HELD_V1, "v2": HELD_V2})
    install_recorded_smi(bin_dir, {"--query-gpu=": (H100 / "nvidia-smi-query-holding-8gib.csv", 0)})

    (nvml,) = read_nvml()
    (smi,) = read_nvidia_smi()

    assert smi.vram_used_mb == RECORDED["read_smi_while_held"][0]["vram_used_mb"] == 8811
    assert nvml.vram_used_mb == smi.vram_used_mb
    assert nvml.vram_reserved_mb == 480


def test_driver_without_memory_v2_falls_back_to_v1(fake_nvml: FakeNvml) -> None:
    # No "v2" entry and no reserved_mib: nvmlDeviceGetMemoryInfo_v2 is FunctionNotFound.
    add_h100(fake_nvml, {"v1": HELD_V1})

    (gpu,) = read_nvml()

    # 9290.76 MiB: recorded as 9290 when read_nvml floored; it rounds like nvidia-smi now.
    assert RECORDED["read_nvml_while_held"][0]["vram_used_mb"] == 9290
    assert gpu.vram_used_mb == 9291
    assert gpu.vram_reserved_mb is None  # v1 cannot tell the reserve apart
    assert fake_nvml.memory_versions == [pynvml.nvmlMemory_v2, None]


def test_old_nvidia_ml_py_without_the_version_argument_falls_back_to_v1(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_h100(fake_nvml, {"v1": IDLE_V1, "v2": IDLE_V2})

    answer = pynvml.nvmlDeviceGetMemoryInfo

    def v1_only(handle: object) -> object:  # the signature of nvidia-ml-py before v2 existed
        return answer(handle)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", v1_only)

    (gpu,) = read_nvml()

    assert (gpu.vram_used_mb, gpu.vram_reserved_mb) == (480, None)


def test_per_process_memory_nvml_and_nvidia_smi_agree(fake_nvml: FakeNvml, bin_dir: Path) -> None:
    (recorded,) = RECORDED["compute_procs"]
    add_h100(
        fake_nvml,
        {"v1": HELD_V1, "v2": HELD_V2},
        compute_processes=[(recorded["pid"], recorded["usedGpuMemory"])],
    )
    install_recorded_smi(
        bin_dir, {"--query-compute-apps=": (H100 / "nvidia-smi-compute-apps.csv", 0)}
    )

    scan = read_nvml_scan(with_processes=True)
    from_smi = read_nvidia_smi_processes()

    assert scan.processes == (GpuProcess(496, UUID, 8802, "compute"),)
    assert from_smi == (GpuProcess(496, UUID, 8802, "compute"),)
    assert (H100 / "nvidia-smi-compute-apps.csv").read_text() == RECORDED["smi_compute_apps"]


def test_detect_falls_back_to_nvidia_smi_for_processes_too(
    fake_nvml: FakeNvml, bin_dir: Path
) -> None:
    fake_nvml.init_error = pynvml.NVMLError_LibraryNotFound()
    install_recorded_smi(
        bin_dir,
        {
            "--query-gpu=": (H100 / "nvidia-smi-query-holding-8gib.csv", 0),
            "--query-compute-apps=": (H100 / "nvidia-smi-compute-apps.csv", 0),
        },
    )

    found = detect(with_processes=True)

    assert found.source is DetectionSource.NVIDIA_SMI
    assert found.gpus[0].vram_used_mb == 8811
    assert found.processes == (GpuProcess(496, UUID, 8802, "compute"),)


def test_nvidia_smi_rejecting_the_process_query_leaves_processes_unmeasured(
    fake_nvml: FakeNvml, bin_dir: Path
) -> None:
    fake_nvml.init_error = pynvml.NVMLError_LibraryNotFound()
    install_recorded_smi(
        bin_dir,
        {
            "--query-gpu=": (H100 / "nvidia-smi-query.csv", 0),
            # The recorded answer to a field this driver does not know (exit status 2).
            "--query-compute-apps=": (H100 / "nvidia-smi-bad-field.txt", 2),
        },
    )

    found = detect(with_processes=True)

    assert found.gpus[0].vram_used_mb == 0
    assert found.processes is None
    assert "exit status 2" in found.process_note
    assert "is not a valid field to query" in found.process_note
    with pytest.raises(DetectionError, match="could not list the GPU processes"):
        read_nvidia_smi_processes()


def test_no_processes_on_an_idle_gpu(fake_nvml: FakeNvml, bin_dir: Path) -> None:
    add_h100(fake_nvml, {"v1": IDLE_V1, "v2": IDLE_V2})
    empty = bin_dir / "empty.csv"
    empty.write_text("")
    install_recorded_smi(bin_dir, {"--query-compute-apps=": (empty, 0)})

    assert read_nvml_scan(with_processes=True).processes == ()
    assert read_nvidia_smi_processes() == ()
    # plain nvidia-smi on the recorded idle GPU agrees: "No running processes found"
    assert "No running processes found" in (H100 / "nvidia-smi.txt").read_text()


def test_a_gpu_refusing_the_process_query_keeps_its_readings(fake_nvml: FakeNvml) -> None:
    add_h100(
        fake_nvml,
        {"v1": IDLE_V1, "v2": IDLE_V2},
        errors={"nvmlDeviceGetComputeRunningProcesses": pynvml.NVMLError_NoPermission()},
    )

    scan = read_nvml_scan(with_processes=True)

    assert scan.gpus[0].vram_used_mb == 0
    assert scan.processes == ()
    assert scan.unmeasured_uuids == (UUID,)
    assert scan.process_note.startswith("GPU 0: processes unreadable (")


def test_a_process_with_compute_and_graphics_contexts_counts_once(fake_nvml: FakeNvml) -> None:
    fake_nvml.add_gpu(
        "NVIDIA RTX A5500",
        "GPU-5f3c1b2e-8a4d-4c6e-9b1f-2d7a0e4c8b13",
        total_mib=24564,
        used_mib=4000,
        reserved_mib=300,
        compute_processes=[(100, 2048 * 1024**2), (101, None)],
        graphics_processes=[(100, 2048 * 1024**2), (200, 512 * 1024**2)],
    )

    scan = read_nvml_scan(with_processes=True)

    assert [(p.pid, p.used_mb, p.kind) for p in scan.processes or ()] == [
        (100, 2048, "compute"),
        (101, None, "compute"),
        (200, 512, "graphics"),
    ]
    assert scan.gpus[0].vram_used_mb == 3700
    assert scan.gpus[0].vram_reserved_mb == 300


@pytest.mark.django_db
def test_detect_gpus_prints_the_driver_reserve(
    fake_nvml: FakeNvml, settings: Any, bin_dir: Path
) -> None:
    from io import StringIO

    from django.core.management import call_command

    settings.GPUCONFIG_SIMULATED_GPUS = None
    add_h100(fake_nvml, {"v1": IDLE_V1, "v2": IDLE_V2})
    out = StringIO()

    call_command("detect_gpus", stdout=out)

    header, row = out.getvalue().splitlines()[1:3]
    assert re.search(r"VRAM used MB +Reserved MB +Compute", header), header
    assert row.split()[5:8] == ["81,559", "0", "480"]
