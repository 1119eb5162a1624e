"""ROCm's two SMI interfaces, the first two readers of :func:`devices.detection.rocm.detect_rocm`:

1. The ``amdsmi`` Python bindings, where they import. They ctypes-load ROCm's
   ``libamd_smi.so``; without it the PyPI package prints to stdout and raises ``KeyError``
   (not ``ImportError``), so the import is guarded broadly and its stdout swallowed.
2. ``rocm-smi --json`` as a subprocess (no shell). Its keys drifted between releases
   (``Card series`` <= 6.0.2, ``Card Series`` >= 6.1.2; ``Device Name`` only from 6.1.2;
   power as ``Average`` or ``Current Socket Graphics Package Power``); every recorded shape
   is accepted (devices/tests/fixtures/rocm).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import re
import shutil
import subprocess
from types import ModuleType
from typing import Any, Final

from devices.detection.rocm_cards import (
    MIB,
    RocmUnavailable,
    _Card,
    _int,
    _pci_bus,
    _readings,
    _text,
    _unique_id,
)
from devices.detection.types import (
    Detection,
    DetectionError,
    DetectionSource,
    GpuProcess,
    GpuReading,
)

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
