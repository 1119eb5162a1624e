"""What the three ROCm readers share: one AMD GPU as a reader saw it (:class:`_Card`), and
how the cards become :class:`GpuReading` rows with their index and UUID settled.

UUID: ``GPU-`` + the card's unique id in hex (KFD ``unique_id``, rocm-smi ``Unique ID``,
amdsmi ``asic_serial``: one number), as ``rocminfo`` prints it. Partitions share their
card's unique id, so each gets ``-<partition>`` appended. A card without one (consumer
cards often say ``N/A``) is named by its serial number, else by its PCI address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from devices.detection.types import GpuReading, GpuVendor, SourceUnavailable

MIB: Final = 1024**2
# An AMD GPU with at most this much VRAM is an integrated GPU's BIOS carve-out (a Strix
# Halo APU shows 512 MiB: gpustack#4848), not memory to plan services into.
CARVE_OUT_MAX_MB: Final = 2048
_PLACEHOLDERS: Final = {"", "n/a", "none", "unknown", "not supported"}


class RocmUnavailable(SourceUnavailable):
    """No way to read AMD GPUs here: no amdsmi library, no rocm-smi, no KFD in sysfs."""

    source_name = "ROCm"


@dataclass(frozen=True)
class _Card:
    """One AMD GPU (or partition) as a source read it, before UUIDs are settled."""

    unique_id: int | None
    name: str
    vram_total_mb: int | None
    vram_used_mb: int | None
    gfx_target: str | None = None
    utilization_percent: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    pci_bus: str | None = None
    serial: str | None = None
    render_node: str | None = None
    apu: bool = False


def _readings(cards: list[_Card]) -> tuple[GpuReading, ...]:
    """Index the cards in the order given (the CDI order) and settle their UUIDs."""
    shared = _shared_unique_ids(cards)
    seen: dict[int, int] = {}
    readings = []
    for index, card in enumerate(cards):
        uuid = _uuid(card, index)
        if card.unique_id is not None and card.unique_id in shared:
            partition = seen.get(card.unique_id, 0)
            seen[card.unique_id] = partition + 1
            uuid = f"{uuid}-{partition}"
        readings.append(
            GpuReading(
                index=index,
                uuid=uuid,
                name=card.name,
                vram_total_mb=card.vram_total_mb,
                vram_used_mb=card.vram_used_mb,
                compute_capability=card.gfx_target,
                utilization_percent=card.utilization_percent,
                temperature_c=card.temperature_c,
                power_w=card.power_w,
                vendor=GpuVendor.AMD,
                device_index=index,
                render_node=card.render_node,
                pci_bus=card.pci_bus,
                integrated=card.apu
                or (card.vram_total_mb is not None and card.vram_total_mb <= CARVE_OUT_MAX_MB),
            )
        )
    return tuple(readings)


def _shared_unique_ids(cards: list[_Card]) -> set[int]:
    counts: dict[int, int] = {}
    for card in cards:
        if card.unique_id is not None:
            counts[card.unique_id] = counts.get(card.unique_id, 0) + 1
    return {unique_id for unique_id, count in counts.items() if count > 1}


def _uuid(card: _Card, index: int) -> str:
    if card.unique_id is not None:
        return f"GPU-{card.unique_id:x}"
    if card.serial is not None:
        return f"GPU-serial-{card.serial}"
    if card.pci_bus is not None:
        return f"GPU-pci-{card.pci_bus.replace(':', '-').replace('.', '-')}"
    return f"GPU-amd-{index}"


def _unique_id(text: object) -> int | None:
    """A unique id as rocm-smi ("0x5c88..."), amdsmi or KFD (decimal) write it; 0/N/A: none."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text or None
    if not isinstance(text, str) or text.strip().lower() in _PLACEHOLDERS:
        return None
    value = text.strip().lower()
    try:
        number = int(value, 16) if value.startswith("0x") else int(value)
    except ValueError:
        try:
            number = int(value, 16)
        except ValueError:
            return None
    return number or None


def _pci_bus(text: object) -> str | None:
    if not isinstance(text, str) or text.strip().lower() in _PLACEHOLDERS:
        return None
    return text.strip().lower()


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return round(value) if value >= 0 else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return round(number) if number >= 0 else None
    return None


def _text(value: object) -> str | None:
    if not isinstance(value, str) or value.strip().lower() in _PLACEHOLDERS:
        return None
    return value.strip()
