"""Shared fixtures for the GPU detection tests.

NVML is faked at the outermost boundary only: the ``pynvml`` module functions that call
into ``libnvidia-ml.so``. Everything above them (our error mapping, unit conversions,
fallback logic) runs for real.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

MIB = 1024**2


@dataclass
class FakeGpu:
    """What one fake NVML device answers.

    ``errors`` maps a pynvml function name (``"nvmlDeviceGetPowerUsage"``) to the
    exception that call raises for this device.
    """

    name: str | bytes
    uuid: str | bytes
    total_mib: int
    used_mib: int
    capability: tuple[int, int] = (8, 6)
    utilization: int = 0
    temperature: int = 40
    power_mw: int = 50_000
    errors: dict[str, Exception] = field(default_factory=dict)
    # Memory info v2: the driver's reserve, reported apart from ``used``. None: the driver
    # has no v2 (nvmlDeviceGetMemoryInfo_v2 missing, as before R510) and v1 answers,
    # counting the reserve in ``used_mib``.
    reserved_mib: int | None = None
    # Exact byte values to replay a recording, overriding the MiB fields: {"v1": {total,
    # used, free}, "v2": {total, used, free, reserved}} as in fixtures/h100/readings.json.
    memory_bytes: dict[str, dict[str, int]] | None = None
    # (pid, bytes or None) as nvmlDeviceGet{Compute,Graphics}RunningProcesses list them.
    compute_processes: list[tuple[int, int | None]] = field(default_factory=list)
    graphics_processes: list[tuple[int, int | None]] = field(default_factory=list)


@dataclass
class FakeNvml:
    """The state behind the patched ``pynvml`` functions, and a record of the calls."""

    gpus: list[FakeGpu] = field(default_factory=list)
    init_error: Exception | None = None
    count_error: Exception | None = None
    shutdown_error: Exception | None = None
    init_calls: int = 0
    shutdown_calls: int = 0
    temperature_sensors: list[int] = field(default_factory=list)
    memory_versions: list[int | None] = field(default_factory=list)
    process_calls: int = 0

    def add_gpu(self, name: str | bytes, uuid: str | bytes, **readings: Any) -> FakeGpu:
        """Append a GPU (the next NVML index); ``readings`` are :class:`FakeGpu` fields."""
        readings.setdefault("total_mib", 81559)
        readings.setdefault("used_mib", 0)
        gpu = FakeGpu(name=name, uuid=uuid, **readings)
        self.gpus.append(gpu)
        return gpu

    def add_reference_box(self) -> tuple[FakeGpu, FakeGpu]:
        """Add the design's reference GPUs as NVML would report them (A5500, A400)."""
        return (
            self.add_gpu(
                "NVIDIA RTX A5500",
                "GPU-5f3c1b2e-8a4d-4c6e-9b1f-2d7a0e4c8b13",
                total_mib=24564,
                used_mib=19304,
                utilization=47,
                temperature=61,
                power_mw=142_710,
            ),
            self.add_gpu(
                "NVIDIA RTX A400",
                "GPU-a91e6d04-37c2-4f85-b0d9-6e2f1c8a5d47",
                total_mib=4094,
                used_mib=329,
                utilization=2,
                temperature=38,
                power_mw=8_930,
            ),
        )

    def _gpu(self, handle: object, function: str) -> FakeGpu:
        assert isinstance(handle, FakeHandle), f"{function} got {handle!r}, not a handle"
        gpu = self.gpus[handle.index]
        if function in gpu.errors:
            raise gpu.errors[function]
        return gpu

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Replace the pynvml functions the code under test calls."""

        def init() -> None:
            self.init_calls += 1
            if self.init_error is not None:
                raise self.init_error

        def shutdown() -> None:
            self.shutdown_calls += 1
            if self.shutdown_error is not None:
                raise self.shutdown_error

        def count() -> int:
            if self.count_error is not None:
                raise self.count_error
            return len(self.gpus)

        def handle_by_index(index: int) -> FakeHandle:
            if not 0 <= index < len(self.gpus):
                raise pynvml.NVMLError_InvalidArgument()
            handle = FakeHandle(index)
            self._gpu(handle, "nvmlDeviceGetHandleByIndex")
            return handle

        def memory_info(handle: object, version: int | None = None) -> SimpleNamespace:
            gpu = self._gpu(handle, "nvmlDeviceGetMemoryInfo")
            self.memory_versions.append(version)
            if version is not None:
                # pynvml calls nvmlDeviceGetMemoryInfo_v2 for any version; a driver without
                # it answers FunctionNotFound, as NVML's symbol lookup does.
                assert version == pynvml.nvmlMemory_v2, f"unexpected memory version {version}"
                if gpu.memory_bytes is not None and "v2" in gpu.memory_bytes:
                    return SimpleNamespace(**gpu.memory_bytes["v2"])
                if gpu.reserved_mib is None:
                    raise pynvml.NVMLError_FunctionNotFound()
                return SimpleNamespace(
                    total=gpu.total_mib * MIB,
                    used=(gpu.used_mib - gpu.reserved_mib) * MIB,
                    free=(gpu.total_mib - gpu.used_mib) * MIB,
                    reserved=gpu.reserved_mib * MIB,
                )
            if gpu.memory_bytes is not None and "v1" in gpu.memory_bytes:
                return SimpleNamespace(**gpu.memory_bytes["v1"])
            return SimpleNamespace(
                total=gpu.total_mib * MIB,
                used=gpu.used_mib * MIB,
                free=(gpu.total_mib - gpu.used_mib) * MIB,
            )

        def processes(function: str) -> Callable[[object], list[SimpleNamespace]]:
            def listed(handle: object) -> list[SimpleNamespace]:
                gpu = self._gpu(handle, function)
                self.process_calls += 1
                entries = gpu.compute_processes if "Compute" in function else gpu.graphics_processes
                # pynvml's own object: pid, usedGpuMemory (None when not available), and
                # the MIG instance ids, which are 0xFFFFFFFF outside MIG.
                return [
                    SimpleNamespace(
                        pid=pid,
                        usedGpuMemory=used,
                        gpuInstanceId=0xFFFFFFFF,
                        computeInstanceId=0xFFFFFFFF,
                    )
                    for pid, used in entries
                ]

            return listed

        def temperature(handle: object, sensor: int) -> int:
            self.temperature_sensors.append(sensor)
            return self._gpu(handle, "nvmlDeviceGetTemperature").temperature

        replacements = {
            "nvmlInit": init,
            "nvmlShutdown": shutdown,
            "nvmlDeviceGetCount": count,
            "nvmlDeviceGetHandleByIndex": handle_by_index,
            "nvmlDeviceGetName": lambda h: self._gpu(h, "nvmlDeviceGetName").name,
            "nvmlDeviceGetUUID": lambda h: self._gpu(h, "nvmlDeviceGetUUID").uuid,
            "nvmlDeviceGetMemoryInfo": memory_info,
            "nvmlDeviceGetCudaComputeCapability": lambda h: (
                self._gpu(h, "nvmlDeviceGetCudaComputeCapability").capability
            ),
            "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(
                gpu=self._gpu(h, "nvmlDeviceGetUtilizationRates").utilization, memory=0
            ),
            "nvmlDeviceGetTemperature": temperature,
            "nvmlDeviceGetPowerUsage": lambda h: self._gpu(h, "nvmlDeviceGetPowerUsage").power_mw,
            "nvmlDeviceGetComputeRunningProcesses": processes(
                "nvmlDeviceGetComputeRunningProcesses"
            ),
            "nvmlDeviceGetGraphicsRunningProcesses": processes(
                "nvmlDeviceGetGraphicsRunningProcesses"
            ),
        }
        for name, replacement in replacements.items():
            assert hasattr(pynvml, name), f"pynvml has no {name}; the fake is out of date"
            monkeypatch.setattr(pynvml, name, replacement)


@dataclass(frozen=True)
class FakeHandle:
    """Stands in for NVML's opaque device handle."""

    index: int


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    """An empty fake NVML (no GPUs) installed into ``pynvml``; add GPUs with ``add_gpu``."""
    fake = FakeNvml()
    fake.install(monkeypatch)  # monkeypatch undoes it: no teardown of our own
    return fake


@pytest.fixture(autouse=True)
def no_amd_sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the ROCm source's sysfs at an empty folder: no test depends on this machine's
    /sys (an AMD host running the tests would otherwise see its own cards). Tests that
    replay a KFD capture copy it under the returned root."""
    from devices.detection import rocm

    root = tmp_path / "sys"
    root.mkdir()
    monkeypatch.setattr(rocm, "SYSFS_ROOT", root)
    return root


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory that is the whole of PATH, so a real nvidia-smi can never be found.

    Tests put their own fake ``nvidia-smi`` in it (``detection_support.install_smi``,
    ``fake_smi.install_recorded_smi``).
    """
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", str(directory))
    return directory
