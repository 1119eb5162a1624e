"""The ROCm source: AMD GPUs through ``amdsmi``, else ``rocm-smi --json``, else sysfs.

Three ways in, tried in this order by :func:`detect_rocm`:

1. The ``amdsmi`` Python bindings, where they import. They ctypes-load ROCm's
   ``libamd_smi.so``; without it the PyPI package prints to stdout and raises ``KeyError``
   (not ``ImportError``), so the import is guarded broadly and its stdout swallowed.
2. ``rocm-smi --json`` as a subprocess (no shell). Its keys drifted between releases
   (``Card series`` <= 6.0.2, ``Card Series`` >= 6.1.2; ``Device Name`` only from 6.1.2;
   power as ``Average`` or ``Current Socket Graphics Package Power``); every recorded shape
   is accepted (devices/tests/fixtures/rocm).
3. The kernel's sysfs, which needs no ROCm at all: KFD topology
   (``/sys/class/kfd/kfd/topology/nodes/*/properties``) for the GPUs, their unique ids and
   render nodes, and the DRM files of the PCI device (``mem_info_vram_total/used``,
   ``gpu_busy_percent``) for memory and load.

Numbering: ``index`` follows amd-ctk's CDI spec (``amd.com/gpu=N``): cards in PCI bus
order, a partitioned card's partitions (CPX, ...) one after another under it. rocm-smi's
``cardN`` keys and amdsmi's handles are in that same order; DRM ``cardN``/``renderD<M>``
are not (one real RX 7800 XT is card1 + renderD128), so render nodes are read from sysfs
by PCI address, never derived from the index.

UUID: ``GPU-`` + the card's unique id in hex (KFD ``unique_id``, rocm-smi ``Unique ID``,
amdsmi ``asic_serial``: one number), as ``rocminfo`` prints it. Partitions share their
card's unique id, so each gets ``-<partition>`` appended. A card without one (consumer
cards often say ``N/A``) is named by its serial number, else by its PCI address.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from devices.detection.types import (
    Detection,
    DetectionError,
    DetectionSource,
    GpuProcess,
    GpuReading,
    GpuVendor,
    SourceUnavailable,
)

logger = logging.getLogger(__name__)

MIB: Final = 1024**2
# Where the kernel's sysfs is read from; tests point it at recorded KFD captures.
SYSFS_ROOT: Path = Path("/sys")
# An AMD GPU with at most this much VRAM is an integrated GPU's BIOS carve-out (a Strix
# Halo APU shows 512 MiB: gpustack#4848), not memory to plan services into.
CARVE_OUT_MAX_MB: Final = 2048

_PLACEHOLDERS: Final = {"", "n/a", "none", "unknown", "not supported"}


class RocmUnavailable(SourceUnavailable):
    """No way to read AMD GPUs here: no amdsmi library, no rocm-smi, no KFD in sysfs."""

    source_name = "ROCm"


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


# --- shared -----------------------------------------------------------------------------


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


def _gfx_target(version: int) -> str | None:
    """KFD's ``gfx_target_version`` (90402, 110001) as the LLVM target (gfx942, gfx1101)."""
    if version <= 0:
        return None
    major, minor, step = version // 10000, version // 100 % 100, version % 100
    return f"gfx{major}{minor:x}{step:x}"


# --- 1. amdsmi --------------------------------------------------------------------------


def _load_amdsmi() -> ModuleType:
    """The ``amdsmi`` module, or RocmUnavailable.

    Without ROCm's ``libamd_smi.so`` the PyPI package prints to stdout and raises
    ``KeyError``; an old copy may raise anything else. None of that may reach our output.
    """
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return importlib.import_module("amdsmi")
    except Exception as error:  # any failure means "no usable library"
        raise RocmUnavailable(
            "amdsmi library not found", f"{type(error).__name__}: {error}"
        ) from None


def _detect_amdsmi(*, with_processes: bool) -> Detection:
    amdsmi = _load_amdsmi()
    try:
        amdsmi.amdsmi_init()
    except Exception as error:  # AmdSmiLibraryException and friends
        raise RocmUnavailable("amdsmi could not be initialised", str(error)) from None
    try:
        handles = list(amdsmi.amdsmi_get_processor_handles())
        cards = [_amdsmi_card(amdsmi, position, handle) for position, handle in enumerate(handles)]
        readings = _readings(cards)
        processes = None
        note = ""
        if with_processes:
            processes, note = _amdsmi_processes(amdsmi, handles, readings)
    finally:
        with contextlib.suppress(Exception):
            amdsmi.amdsmi_shut_down()
    if not readings:
        raise RocmUnavailable("amdsmi lists no AMD GPU")
    return Detection(DetectionSource.ROCM_AMDSMI, readings, processes=processes, process_note=note)


def _amdsmi_card(amdsmi: ModuleType, position: int, handle: object) -> _Card:
    """Required readings fail the scan (naming the GPU); optional ones become None."""
    try:
        bdf = amdsmi.amdsmi_get_gpu_device_bdf(handle)
        asic = amdsmi.amdsmi_get_gpu_asic_info(handle)
        vram = amdsmi.amdsmi_get_gpu_vram_usage(handle)
    except Exception as error:  # the library's own exception types vary
        raise DetectionError(f"amdsmi could not read AMD GPU {position}: {error}") from None
    activity = _optional(lambda: amdsmi.amdsmi_get_gpu_activity(handle))
    power = _optional(lambda: amdsmi.amdsmi_get_power_info(handle))
    temperature = _optional(
        lambda: amdsmi.amdsmi_get_temp_metric(
            handle,
            amdsmi.AmdSmiTemperatureType.EDGE,
            amdsmi.AmdSmiTemperatureMetric.CURRENT,
        )
    )
    target = asic.get("target_graphics_version")
    return _Card(
        unique_id=_unique_id(asic.get("asic_serial")),
        name=_text(asic.get("market_name")) or f"AMD GPU {position}",
        # amdsmi reports VRAM in MiB already (amd-smi labels it "MB").
        vram_total_mb=_int(vram.get("vram_total")),
        vram_used_mb=_int(vram.get("vram_used")),
        gfx_target=target if isinstance(target, str) and target.startswith("gfx") else None,
        utilization_percent=_int(activity.get("gfx_activity")) if activity else None,
        temperature_c=_int(temperature),
        power_w=_power(power),
        pci_bus=_pci_bus(bdf),
    )


def _amdsmi_processes(
    amdsmi: ModuleType, handles: list[object], readings: tuple[GpuReading, ...]
) -> tuple[tuple[GpuProcess, ...] | None, str]:
    processes: list[GpuProcess] = []
    for handle, reading in zip(handles, readings, strict=True):
        try:
            listed = amdsmi.amdsmi_get_gpu_process_list(handle)
        except Exception as error:  # the library raises its own types
            return None, f"amdsmi could not list the processes of AMD GPU {reading.index}: {error}"
        for entry in listed:
            usage = entry.get("memory_usage") or {}
            used = _int(usage.get("vram_mem"))
            processes.append(
                GpuProcess(
                    pid=int(entry["pid"]),
                    gpu_uuid=reading.uuid,
                    used_mb=None if used is None else used // MIB,
                )
            )
    return tuple(processes), ""


def _optional(read: Any) -> Any:
    try:
        return read()
    except Exception:  # a reading this GPU does not offer
        return None


def _power(info: object) -> float | None:
    if not isinstance(info, dict):
        return None
    for key in ("average_socket_power", "current_socket_power", "socket_power"):
        value = info.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
    return None


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


# --- 2. rocm-smi --json -----------------------------------------------------------------

ROCM_SMI_ARGUMENTS: Final = (
    "--showproductname",
    "--showuniqueid",
    "--showserial",
    "--showbus",
    "--showmeminfo",
    "vram",
    "--showuse",
    "--showtemp",
    "--showpower",
)
_CARD_KEY_RE: Final = re.compile(r"card([0-9]+)")
_PID_KEY_RE: Final = re.compile(r"PID([0-9]+)")
_HEX_CODE_RE: Final = re.compile(r"0x[0-9a-fA-F]+")
# What rocm-smi prints (exit status 1 or 2) on a host where amdgpu is not loaded.
_ROCM_SMI_NO_DRIVER: Final = ("driver not initialized", "amdgpu not found", "no amd gpus")


def _detect_rocm_smi(*, with_processes: bool) -> Detection:
    document = run_rocm_smi(with_processes=with_processes)
    readings = parse_rocm_smi(document)
    processes: tuple[GpuProcess, ...] | None = None
    note = ""
    if with_processes:
        processes, note = rocm_smi_processes(document, readings)
    return Detection(DetectionSource.ROCM_SMI, readings, processes=processes, process_note=note)


def run_rocm_smi(
    *, with_processes: bool, executable: str = "rocm-smi", timeout_s: float = 10
) -> dict[str, Any]:
    """Run ``rocm-smi ... --json`` (no shell) and return its parsed output."""
    resolved = shutil.which(executable)
    if resolved is None:
        raise RocmUnavailable(f"{executable} not on PATH")
    command = [resolved, *ROCM_SMI_ARGUMENTS, *(["--showpids"] if with_processes else [])]
    command.append("--json")
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DetectionError(f"rocm-smi did not answer within {timeout_s:g} s.") from None
    except OSError as error:
        raise DetectionError(
            f"rocm-smi ({resolved}) could not be started: {error.strerror or error}."
        ) from None
    output = " ".join(f"{completed.stderr} {completed.stdout}".split())
    if completed.returncode != 0:
        if any(phrase in output.lower() for phrase in _ROCM_SMI_NO_DRIVER):
            raise RocmUnavailable("rocm-smi finds no AMD driver", output[:300])
        raise DetectionError(
            f"rocm-smi failed (exit status {completed.returncode}): {output[:500] or 'no output'}"
        )
    # rocm-smi may print warnings before the JSON document; it starts at the first brace.
    start = completed.stdout.find("{")
    try:
        document = json.loads(completed.stdout[start:] if start >= 0 else completed.stdout)
    except json.JSONDecodeError as error:
        raise DetectionError(
            f"rocm-smi printed something that is not JSON ({error.msg}): {output[:300]}"
        ) from None
    if not isinstance(document, dict):
        raise DetectionError("rocm-smi printed JSON that is not an object of cards.")
    return document


def parse_rocm_smi(document: dict[str, Any]) -> tuple[GpuReading, ...]:
    """The GPUs of one ``rocm-smi --json`` document, in its ``cardN`` (PCI bus) order.

    Keys are matched without regard to case (``Card series`` became ``Card Series``);
    ``"system"`` and stray numeric keys are not cards. No card: RocmUnavailable.
    """
    cards: list[tuple[int, dict[str, Any]]] = []
    for key, value in document.items():
        match = _CARD_KEY_RE.fullmatch(key)
        if match and isinstance(value, dict):
            cards.append((int(match.group(1)), {k.lower(): v for k, v in value.items()}))
    if not cards:
        raise RocmUnavailable("rocm-smi lists no AMD GPU")
    cards.sort()
    if [number for number, _ in cards] != list(range(len(cards))):
        raise DetectionError(
            "rocm-smi numbered its cards "
            f"{', '.join(f'card{n}' for n, _ in cards)}; expected card0 to card{len(cards) - 1}."
        )
    return _readings([_rocm_smi_card(number, fields) for number, fields in cards])


def _rocm_smi_card(number: int, fields: dict[str, Any]) -> _Card:
    total = _bytes_to_mib(fields.get("vram total memory (b)"))
    if total is None:
        raise DetectionError(
            f"rocm-smi gives card{number} no readable 'VRAM Total Memory (B)' "
            f"(got {fields.get('vram total memory (b)')!r}); is --showmeminfo vram supported?"
        )
    gfx = _text(fields.get("gfx version"))
    serial = _text(fields.get("serial number"))
    return _Card(
        unique_id=_unique_id(fields.get("unique id")),
        name=_rocm_smi_name(number, fields),
        vram_total_mb=total,
        vram_used_mb=_bytes_to_mib(fields.get("vram total used memory (b)")),
        gfx_target=gfx if gfx and gfx.startswith("gfx") else None,
        utilization_percent=_int(fields.get("gpu use (%)")),
        temperature_c=_int(
            fields.get("temperature (sensor edge) (c)")
            or fields.get("temperature (sensor junction) (c)")
        ),
        power_w=_float(
            fields.get("average graphics package power (w)")
            or fields.get("current socket graphics package power (w)")
        ),
        pci_bus=_pci_bus(fields.get("pci bus")),
        serial=serial if serial and serial != "0" else None,
    )


def _rocm_smi_name(number: int, fields: dict[str, Any]) -> str:
    """``Device Name`` (>= 6.1.2), else the card series; a bare PCI id is no name."""
    for key in ("device name", "card series"):
        name = _text(fields.get(key))
        if name and not _HEX_CODE_RE.fullmatch(name):
            return name
    sku = _text(fields.get("card sku"))
    return f"AMD GPU (SKU {sku})" if sku else f"AMD GPU {number}"


def rocm_smi_processes(
    document: dict[str, Any], readings: tuple[GpuReading, ...]
) -> tuple[tuple[GpuProcess, ...] | None, str]:
    """Per-process VRAM from ``--showpids``: ``"PID<n>": "name, GPUs, VRAM bytes, SDMA, CU"``.

    rocm-smi says how many GPUs a process uses, not which: its memory can be attributed
    only on a host with one AMD GPU. Elsewhere it is not measured, and the note says so.
    """
    system = document.get("system")
    listed = system if isinstance(system, dict) else {}
    entries = [(m, v) for k, v in listed.items() if (m := _PID_KEY_RE.fullmatch(k))]
    if not entries:
        return (), ""
    if len(readings) != 1:
        return None, (
            "rocm-smi --showpids does not say which AMD GPU a process's memory is on; "
            "per-process memory is not measured on a host with several AMD GPUs."
        )
    processes = []
    for match, value in entries:
        parts = [part.strip() for part in str(value).split(",")]
        used = _int(parts[2]) if len(parts) >= 3 else None
        processes.append(
            GpuProcess(
                pid=int(match.group(1)),
                gpu_uuid=readings[0].uuid,
                used_mb=None if used is None else used // MIB,
            )
        )
    return tuple(processes), ""


def _bytes_to_mib(value: object) -> int | None:
    number = _int(value)
    return None if number is None else number // MIB


def _float(value: object) -> float | None:
    # "N/A (Secondary die)" and the like: no reading.
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if number >= 0 else None


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
