"""The NVML source, through ``pynvml`` (nvidia-ml-py): the library the driver ships.

Fast and precise, and the first choice of the chain. "Unavailable" (no library, no driver)
lets the chain fall back to the next source; any other NVML failure is a
:class:`DetectionError`, so the caller keeps its last good inventory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pynvml

from devices.detection.nvml_health import read_nvml_health
from devices.detection.types import (
    Detection,
    DetectionError,
    DetectionSource,
    GpuProcess,
    GpuReading,
    SourceUnavailable,
)

logger = logging.getLogger(__name__)

MIB: Final = 1024**2


class NvmlUnavailable(SourceUnavailable):
    """NVML cannot be used on this host at all (library missing, driver not loaded)."""

    source_name = "NVML"


@dataclass(frozen=True)
class NvmlScan:
    """One NVML session's readings, and its per-process memory when asked for."""

    gpus: tuple[GpuReading, ...]
    processes: tuple[GpuProcess, ...] | None = None
    process_note: str = ""
    unmeasured_uuids: tuple[str, ...] = ()


# Errors that mean "this host has no usable NVML", as opposed to "NVML is there but
# something went wrong". Only these let the chain fall back to the next source.
_NVML_UNAVAILABLE_REASONS: Final[dict[type[Exception], str]] = {
    pynvml.NVMLError_LibraryNotFound: "NVML library not found",
    pynvml.NVMLError_DriverNotLoaded: "NVIDIA driver not loaded",
}

# A reading the GPU or the driver does not offer: report None, keep scanning.
_NVML_OPTIONAL_ERRORS: Final = (pynvml.NVMLError_NotSupported, pynvml.NVMLError_NoPermission)


def detect_nvml(*, with_processes: bool) -> Detection:
    """The chain's entry: :func:`read_nvml_scan` as a :class:`Detection`."""
    scan = read_nvml_scan(with_processes=with_processes)
    return Detection(
        DetectionSource.NVML,
        scan.gpus,
        processes=scan.processes,
        process_note=scan.process_note,
        unmeasured_uuids=scan.unmeasured_uuids,
    )


def read_nvml() -> tuple[GpuReading, ...]:
    """Read every GPU through NVML.

    Raises :class:`NvmlUnavailable` when the library or the driver is missing (fall back
    to another source) and :class:`DetectionError` for any other NVML failure, naming the
    GPU index when a single GPU failed (e.g. ``GpuIsLost`` mid-scan).
    """
    return read_nvml_scan(with_processes=False).gpus


def read_nvml_scan(*, with_processes: bool) -> NvmlScan:
    """Read every GPU, and with ``with_processes`` every process's memory, in one session.

    One nvmlInit/nvmlShutdown for both: the process lists cost a few calls per GPU, not a
    second session. Errors as :func:`read_nvml`; a GPU that refuses the process query only
    loses its processes (named in ``process_note``), never its readings.
    """
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        for error_type, reason in _NVML_UNAVAILABLE_REASONS.items():
            if isinstance(error, error_type):
                raise NvmlUnavailable(reason) from error
        raise DetectionError(f"NVML could not be initialised: {_sentence(error)}") from error

    try:
        return _scan(with_processes=with_processes)
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as error:
            # The readings are complete; a failed shutdown must not turn them into an
            # error (or replace the real error that is already propagating).
            logger.warning("nvmlShutdown failed: %s", error)


def _scan(*, with_processes: bool) -> NvmlScan:
    """The body of an initialised NVML session: every GPU, then (if asked) its processes."""
    try:
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError as error:
        raise DetectionError(f"NVML could not count the GPUs: {_sentence(error)}") from error
    gpus: list[GpuReading] = []
    processes: list[GpuProcess] = []
    notes: list[str] = []
    unmeasured: list[str] = []
    for index in range(count):
        handle, reading = _read_nvml_device(index)
        gpus.append(reading)
        if with_processes:
            found, note = _read_nvml_processes(handle, reading)
            processes.extend(found)
            if note:
                notes.append(note)
                unmeasured.append(reading.uuid)
    return NvmlScan(
        tuple(gpus),
        tuple(processes) if with_processes else None,
        " ".join(notes),
        tuple(unmeasured),
    )


def _text(value: bytes | str) -> str:
    # Older nvidia-ml-py releases return bytes for names and UUIDs, newer ones str.
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _sentence(error: Exception) -> str:
    """End an error's text with exactly one full stop (some NVML texts carry their own)."""
    return f"{str(error).rstrip('.')}."


def _optional[T](read: Callable[[], T]) -> T | None:
    """Return ``read()``, or ``None`` when NVML says the GPU cannot provide the value."""
    try:
        return read()
    except _NVML_OPTIONAL_ERRORS:
        return None


def _mib(value_bytes: int) -> int:
    """Bytes to whole MiB, rounded to nearest as nvidia-smi prints them.

    Flooring would make NVML read 8810 where nvidia-smi reads 8811 for the same 8810.76 MiB
    (the recorded H100 holding 8 GiB), and the two sources must agree.
    """
    return (int(value_bytes) + MIB // 2) // MIB


@dataclass(frozen=True)
class _Memory:
    total: int
    used: int
    reserved: int | None  # None: memory info v1, which counts the reserve in ``used``


def _memory_info(handle: object) -> _Memory:
    """Memory info v2 where the driver has it, else v1.

    v1's ``used`` includes the driver's reserve (480 MiB on an idle H100 where nvidia-smi
    says 0); v2 reports the reserve apart, which is what nvidia-smi's ``memory.used`` shows.
    Drivers before R510 have no ``nvmlDeviceGetMemoryInfo_v2`` (FunctionNotFound) and old
    nvidia-ml-py releases have no ``version`` argument (TypeError) or no ``nvmlMemory_v2``.
    """
    version = getattr(pynvml, "nvmlMemory_v2", None)
    if version is not None:
        try:
            v2 = pynvml.nvmlDeviceGetMemoryInfo(handle, version=version)
        except (TypeError, pynvml.NVMLError_FunctionNotFound, pynvml.NVMLError_NotSupported):
            pass
        else:
            return _Memory(int(v2.total), int(v2.used), int(v2.reserved))
    v1 = pynvml.nvmlDeviceGetMemoryInfo(handle)
    return _Memory(int(v1.total), int(v1.used), None)


def _read_nvml_device(index: int) -> tuple[object, GpuReading]:
    """Read one GPU; any NVML error other than "not supported" fails the whole scan."""
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = _text(pynvml.nvmlDeviceGetName(handle))
        uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
        memory = _optional(lambda: _memory_info(handle))
        capability = _optional(lambda: pynvml.nvmlDeviceGetCudaComputeCapability(handle))
        utilization = _optional(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle))
        temperature = _optional(
            lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        )
        power_mw = _optional(lambda: pynvml.nvmlDeviceGetPowerUsage(handle))
    except pynvml.NVMLError as error:
        raise DetectionError(
            f"NVML failed while reading GPU {index}: {_sentence(error)}"
        ) from error
    # Never raises: a counter the card cannot give is None (health.assess says "unknown").
    health = read_nvml_health(handle)

    return handle, GpuReading(
        index=index,
        uuid=uuid,
        name=name,
        # Total floors: a part of a MiB cannot be allocated. Used and reserved round like
        # nvidia-smi so both sources show the same figures.
        vram_total_mb=None if memory is None else memory.total // MIB,
        vram_used_mb=None if memory is None else _mib(memory.used),
        compute_capability=None if capability is None else f"{capability[0]}.{capability[1]}",
        utilization_percent=None if utilization is None else int(utilization.gpu),
        temperature_c=None if temperature is None else int(temperature),
        power_w=None if power_mw is None else power_mw / 1000,
        vram_reserved_mb=(
            None if memory is None or memory.reserved is None else _mib(memory.reserved)
        ),
        health=health,
    )


# Both lists: a CUDA service is a compute process, but a service that renders (or a desktop
# session on the same card) holds memory as a graphics process, and both count against
# what the GPU can still hold.
_NVML_PROCESS_LISTS: Final = (
    ("compute", "nvmlDeviceGetComputeRunningProcesses"),
    ("graphics", "nvmlDeviceGetGraphicsRunningProcesses"),
)


def _read_nvml_processes(handle: object, gpu: GpuReading) -> tuple[list[GpuProcess], str]:
    """The processes holding memory on one GPU, one entry per PID.

    A process with both a compute and a graphics context is listed by NVML twice with the
    same memory; it is counted once. A GPU that refuses the query (NotSupported,
    NoPermission, or any other NVML error) loses only its processes, with a note saying so.
    """
    by_pid: dict[int, GpuProcess] = {}
    for kind, function in _NVML_PROCESS_LISTS:
        try:
            listed = getattr(pynvml, function)(handle)
        except pynvml.NVMLError as error:
            return [], f"GPU {gpu.index}: processes unreadable ({_sentence(error)})"
        for entry in listed:
            pid = int(entry.pid)
            raw = getattr(entry, "usedGpuMemory", None)
            used = None if raw is None else _mib(raw)
            seen = by_pid.get(pid)
            if seen is None or (used or 0) > (seen.used_mb or 0):
                by_pid[pid] = GpuProcess(pid, gpu.uuid, used, seen.kind if seen else kind)
    return sorted(by_pid.values(), key=lambda p: p.pid), ""
