"""What every detection source reports: GPU readings, GPU processes, and the failures.

The sources (``simulated``, ``nvml``, ``nvidia_smi``) produce these types and the chain
(``chain.detect``) hands them to the rest of the product.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Final

from devices.detection.health import HealthReadings

# "8.6", "9.0", "10.0": how every source writes a CUDA compute capability.
COMPUTE_CAPABILITY_RE: Final = re.compile(r"[1-9][0-9]*\.[0-9]+")
# "gfx1101", "gfx90a", "gfx942": an AMD GPU's LLVM target, its counterpart on ROCm.
GFX_TARGET_RE: Final = re.compile(r"gfx[0-9a-f]{3,6}")


class GpuVendor(StrEnum):
    """Who made a GPU: it decides its container device name and which services it can run."""

    NVIDIA = "nvidia"
    AMD = "amd"


# The CDI kind each vendor's container toolkit generates (nvidia-ctk, amd-ctk).
CDI_KINDS: Final[dict[GpuVendor, str]] = {
    GpuVendor.NVIDIA: "nvidia.com/gpu",
    GpuVendor.AMD: "amd.com/gpu",
}


@dataclass(frozen=True)
class GpuReading:
    """One GPU as seen at one moment.

    ``index`` is GPU Config's number for the GPU, unique on the host; ``uuid`` is the
    stable identity that survives reboots and re-cabling, so assignments should key on it.
    Readings a GPU or driver cannot provide (power on some boards, memory on some
    virtualised GPUs) are ``None`` rather than a made-up zero.

    ``device_index`` is the vendor's own number, the one its container device name uses
    (``nvidia.com/gpu=N``: NVML's index; ``amd.com/gpu=N``: amd-ctk's, cards in PCI bus
    order, partitions under their card). On a host with one vendor it equals ``index``; on
    a host with both, NVIDIA GPUs come first and AMD ones follow (see ``chain.detect``).
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
    vendor: GpuVendor = GpuVendor.NVIDIA
    device_index: int | None = None  # None: the same as ``index``
    # The card's DRM nodes, read from sysfs by PCI address ("/dev/dri/renderD128"); AMD
    # services without a CDI spec get the render node (never assumed from the index).
    render_node: str | None = None
    pci_bus: str | None = None  # "0000:04:00.0"
    # An integrated GPU (an APU) whose VRAM is a small BIOS carve-out: listed, marked, and
    # left out of planning unless the operator includes it.
    integrated: bool = False
    # What the card says about its own health (ECC, row remapping, clock events; see
    # health.py); None: the source cannot ask. Not part of the GPU's identity or of its
    # equality: two readings of the same GPU compare equal whatever its counters say.
    health: HealthReadings | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # One form for one GPU: a device index equal to the index is "the same as index",
        # so a reading compares equal after a round trip through the API's shape.
        if self.device_index == self.index:
            object.__setattr__(self, "device_index", None)
        if not isinstance(self.vendor, GpuVendor):
            object.__setattr__(self, "vendor", GpuVendor(self.vendor))

    @property
    def vendor_index(self) -> int:
        """The index the vendor's container device name uses."""
        return self.index if self.device_index is None else self.device_index

    @property
    def container_device(self) -> str:
        """The CDI device name that gives a container this GPU: ``amd.com/gpu=0``."""
        return f"{CDI_KINDS[self.vendor]}={self.vendor_index}"

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
            "vendor": self.vendor.value,
            "device_index": self.vendor_index,
            "render_node": self.render_node,
            "pci_bus": self.pci_bus,
            "integrated": self.integrated,
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
    ROCM_AMDSMI = "amdsmi"
    ROCM_SMI = "rocm-smi"
    KFD_SYSFS = "sysfs"
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
    # Vendors whose source was present but failed while another vendor's answered: their
    # GPUs are missing from ``gpus`` for this reading only (the caller keeps them as last
    # seen). ``message`` says why.
    failed_vendors: tuple[GpuVendor, ...] = ()


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
