"""The ROCm source: AMD GPUs through ``amdsmi``, else ``rocm-smi --json``, else sysfs.

Three ways in, tried in this order by :func:`detect_rocm`:

1. The ``amdsmi`` Python bindings, where they import (:mod:`devices.detection.rocm_smi`).
2. ``rocm-smi --json`` as a subprocess, every recorded shape of its output accepted
   (:mod:`devices.detection.rocm_smi`).
3. The kernel's sysfs, which needs no ROCm at all: KFD topology
   (``/sys/class/kfd/kfd/topology/nodes/*/properties``) for the GPUs, their unique ids and
   render nodes, and the DRM files of the PCI device (``mem_info_vram_total/used``,
   ``gpu_busy_percent``) for memory and load.

Numbering: ``index`` follows amd-ctk's CDI spec (``amd.com/gpu=N``): cards in PCI bus
order, a partitioned card's partitions (CPX, ...) one after another under it. rocm-smi's
``cardN`` keys and amdsmi's handles are in that same order; DRM ``cardN``/``renderD<M>``
are not (one real RX 7800 XT is card1 + renderD128), so render nodes are read from sysfs
by PCI address, never derived from the index.

The card model and the UUIDs all three share are in :mod:`devices.detection.rocm_cards`.
The sysfs reader and the render nodes stay here, next to :data:`SYSFS_ROOT`, which tests
point at recorded captures.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from devices.detection.rocm_cards import (
    CARVE_OUT_MAX_MB,
    MIB,
    RocmUnavailable,
    _Card,
    _readings,
)
from devices.detection.rocm_smi import (
    ROCM_SMI_ARGUMENTS,
    _detect_amdsmi,
    _detect_rocm_smi,
    parse_rocm_smi,
    rocm_smi_processes,
    run_rocm_smi,
)
from devices.detection.types import Detection, DetectionError, DetectionSource, GpuReading

__all__ = [
    "CARVE_OUT_MAX_MB",
    "MIB",
    "ROCM_SMI_ARGUMENTS",
    "SYSFS_ROOT",
    "RocmUnavailable",
    "detect_rocm",
    "kfd_topology_nodes",
    "parse_rocm_smi",
    "read_sysfs",
    "rocm_smi_processes",
    "run_rocm_smi",
]

logger = logging.getLogger(__name__)

# Where the kernel's sysfs is read from; tests point it at recorded KFD captures.
SYSFS_ROOT: Path = Path("/sys")


def detect_rocm(*, with_processes: bool) -> Detection:
    """The chain's entry: amdsmi, else rocm-smi, else sysfs; each one's GPUs get their
    render nodes from sysfs by PCI address. Raises :class:`RocmUnavailable` naming all
    three reasons when none can be used."""
    reasons: list[str] = []
    for reader in (_detect_amdsmi, _detect_rocm_smi, _detect_sysfs):
        try:
            found = reader(with_processes=with_processes)
        except RocmUnavailable as unavailable:
            reasons.append(unavailable.reason)
            continue
        return replace(found, gpus=tuple(_with_sysfs_nodes(gpu) for gpu in found.gpus))
    raise RocmUnavailable(f"no AMD GPU found ({', '.join(reasons)})")


def _with_sysfs_nodes(gpu: GpuReading) -> GpuReading:
    """Add the render node the kernel lists under the GPU's PCI address, if it does."""
    if gpu.render_node is not None or gpu.pci_bus is None:
        return gpu
    drm = SYSFS_ROOT / "bus" / "pci" / "devices" / gpu.pci_bus / "drm"
    try:
        nodes = sorted(p.name for p in drm.iterdir() if p.name.startswith("renderD"))
    except OSError:
        return gpu
    return replace(gpu, render_node=f"/dev/dri/{nodes[0]}") if nodes else gpu


# --- 3. sysfs: KFD topology + DRM -------------------------------------------------------


def kfd_topology_nodes() -> Path:
    return SYSFS_ROOT / "class" / "kfd" / "kfd" / "topology" / "nodes"


def _detect_sysfs(*, with_processes: bool) -> Detection:
    readings = read_sysfs()
    return Detection(
        DetectionSource.KFD_SYSFS,
        readings,
        processes=None,
        process_note=(
            "The kernel's sysfs does not list the processes on an AMD GPU; "
            "per-process memory is not measured without amdsmi or rocm-smi."
            if with_processes
            else ""
        ),
    )


@dataclass(frozen=True)
class _KfdNode:
    node: int
    properties: dict[str, int]
    vram_bank_bytes: int | None

    @property
    def domain(self) -> int:
        return self.properties.get("domain", 0)

    @property
    def location(self) -> int:
        # bus << 8 | device << 3 | function; a partition differs from its card in function.
        return self.properties.get("location_id", 0)

    @property
    def card_key(self) -> tuple[int, int]:
        return self.domain, self.location >> 3

    @property
    def pci_bus(self) -> str:
        bus, device, function = self.location >> 8, (self.location >> 3) & 0x1F, self.location & 7
        return f"{self.domain:04x}:{bus:02x}:{device:02x}.{function:x}"


def read_sysfs() -> tuple[GpuReading, ...]:
    """The AMD GPUs KFD lists, in amd-ctk's order: cards by PCI address, partitions under
    their card. Memory and load come from the PCI device's DRM files where the kernel has
    them; KFD's memory bank size otherwise (used memory is then not measured: KFD's
    ``used_memory`` misses what other drivers hold)."""
    nodes_dir = kfd_topology_nodes()
    try:
        node_dirs = [p for p in nodes_dir.iterdir() if p.name.isdigit()]
    except OSError:
        raise RocmUnavailable("no KFD topology in sysfs", str(nodes_dir)) from None
    gpus = [node for node in map(_read_node, node_dirs) if node is not None]
    if not gpus:
        raise RocmUnavailable("KFD lists no GPU", str(nodes_dir))
    gpus.sort(key=lambda node: (node.card_key, node.location & 7, node.node))
    partitions: dict[tuple[int, int], int] = {}
    for node in gpus:
        partitions[node.card_key] = partitions.get(node.card_key, 0) + 1
    seen: dict[tuple[int, int], int] = {}
    cards = []
    for node in gpus:
        position = seen.get(node.card_key, 0)
        seen[node.card_key] = position + 1
        cards.append(_sysfs_card(node, position, partitions[node.card_key]))
    return _readings(cards)


def _read_node(path: Path) -> _KfdNode | None:
    """A GPU node of the topology (None for CPU nodes: they have no SIMDs)."""
    try:
        properties = _key_values((path / "properties").read_text(encoding="utf-8"))
    except OSError as error:
        raise DetectionError(f"KFD node {path} cannot be read: {error.strerror}.") from None
    if properties.get("simd_count", 0) <= 0:
        return None
    bank: int | None = None
    with contextlib.suppress(OSError):
        bank = _key_values(
            (path / "mem_banks" / "0" / "properties").read_text(encoding="utf-8")
        ).get("size_in_bytes")
    return _KfdNode(int(path.name), properties, bank)


def _key_values(text: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values


def _sysfs_card(node: _KfdNode, partition: int, partitions: int) -> _Card:
    device = SYSFS_ROOT / "bus" / "pci" / "devices" / node.pci_bus
    drm_total = _read_int(device / "mem_info_vram_total")
    local = node.properties.get("local_mem_size", 0) or node.vram_bank_bytes or 0
    total_bytes = drm_total if drm_total is not None else local
    used_bytes = _read_int(device / "mem_info_vram_used")
    gfx = _gfx_target(node.properties.get("gfx_target_version", 0))
    device_id = node.properties.get("device_id", 0)
    name = f"AMD GPU {gfx or ''} (device 0x{device_id:04x})".replace("  ", " ")
    if partitions > 1:
        name += f", partition {partition + 1} of {partitions}"
    minor = node.properties.get("drm_render_minor", 0)
    return _Card(
        unique_id=node.properties.get("unique_id") or None,
        name=name,
        vram_total_mb=total_bytes // MIB if total_bytes else None,
        vram_used_mb=None if used_bytes is None else used_bytes // MIB,
        gfx_target=gfx,
        utilization_percent=_read_int(device / "gpu_busy_percent"),
        pci_bus=node.pci_bus,
        render_node=f"/dev/dri/renderD{minor}" if minor >= 128 else None,
        apu=node.properties.get("cpu_cores_count", 0) > 0,
    )


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _gfx_target(version: int) -> str | None:
    """KFD's ``gfx_target_version`` (90402, 110001) as the LLVM target (gfx942, gfx1101)."""
    if version <= 0:
        return None
    major, minor, step = version // 10000, version // 100 % 100, version % 100
    return f"gfx{major}{minor:x}{step:x}"
