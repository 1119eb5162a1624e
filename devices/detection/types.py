"""What every detection source reports: GPU readings, GPU processes, and the failures.

The sources (``simulated``, ``nvml``, ``nvidia_smi``) produce these types and the chain
(``chain.detect``) hands them to the rest of the product.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Final

# "8.6", "9.0", "10.0": how every source writes a CUDA compute capability.
COMPUTE_CAPABILITY_RE: Final = re.compile(r"[1-9][0-9]*\.[0-9]+")


@dataclass(frozen=True)
class GpuReading:
    """One GPU as seen at one moment.

    ``index`` is the host's NVML/nvidia-smi index (PCI bus order); ``uuid`` is the stable
    identity that survives reboots and re-cabling, so assignments should key on it.
    Readings a GPU or driver cannot provide (power on some boards, memory on some
    virtualised GPUs) are ``None`` rather than a made-up zero.
    """

    index: int
    uuid: str
    name: str
    vram_total_mb: int | None
    vram_used_mb: int | None
    compute_capability: str | None
    utilization_percent: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    # Memory the driver keeps for itself (NVML memory info v2's ``reserved``). It is neither
    # "used" by anyone nor free to allocate; None where the source cannot tell (NVML v1,
    # nvidia-smi, a simulated file without it).
    vram_reserved_mb: int | None = None

    @property
    def vram_free_mb(self) -> int | None:
        """What a process could still allocate: total - driver reserve - used."""
        if self.vram_total_mb is None or self.vram_used_mb is None:
            return None
        return max(0, self.vram_total_mb - (self.vram_reserved_mb or 0) - self.vram_used_mb)

    def as_api_dict(self) -> dict[str, Any]:
        """Return the GPU in the shape of one entry of ``GET /api/system/gpus``.

        The simulated file format is this same shape, so an API response can be saved
        and replayed as a simulated inventory.
        """
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "vram_total_mb": self.vram_total_mb,
            "vram_used_mb": self.vram_used_mb,
            "compute_capability": self.compute_capability,
            "utilization_percent": self.utilization_percent,
            "temperature_c": self.temperature_c,
            "power_w": self.power_w,
            "vram_reserved_mb": self.vram_reserved_mb,
        }


@dataclass(frozen=True)
class GpuProcess:
    """A process holding memory on a GPU, as the driver reports it.

    ``pid`` is a host PID: NVML does not translate PIDs into the caller's PID namespace.
    ``used_mb`` is None where the driver cannot tell (Windows WDDM, some vGPUs).
    """

    pid: int
    gpu_uuid: str
    used_mb: int | None
    kind: str = "compute"  # "compute" or "graphics" (NVML); nvidia-smi lists compute only


class DetectionSource(StrEnum):
    """Where a :class:`Detection` came from (its value names the source in messages)."""

    NVML = "nvml"
    NVIDIA_SMI = "nvidia-smi"
    SIMULATED = "simulated"
    NONE = "none"


@dataclass(frozen=True)
class Detection:
    """Result of a detection: the source used, the GPUs, and why (for fallbacks)."""

    source: DetectionSource
    gpus: tuple[GpuReading, ...]
    message: str = ""
    # Per-process memory, when asked for and the source can give it; None: not measured.
    processes: tuple[GpuProcess, ...] | None = None
    # Why processes are missing or incomplete (e.g. one GPU refuses the query).
    process_note: str = ""
    # GPUs whose processes could not be read, by UUID (their memory is not attributed).
    unmeasured_uuids: tuple[str, ...] = ()


class DetectionError(Exception):
    """The detection path exists but returned something unusable.

    ``str(error)`` is a complete, user-facing sentence. Callers should keep the last good
    inventory rather than replace it with nothing.
    """


class SourceUnavailable(DetectionError):
    """A source cannot be used on this host at all: the chain falls back to the next one.

    Each source subclasses it and names itself in ``source_name``. ``reason`` is a short
    phrase for composing messages such as "No GPUs detected: <reason> and <reason>".
    """

    source_name: ClassVar[str]

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        message = f"{self.source_name} unavailable: {reason}"
        super().__init__(f"{message} ({detail})" if detail else message)
