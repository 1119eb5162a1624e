"""GPU detection: what NVIDIA GPUs does this host have, and what are they doing?

Three sources, tried in this order by :func:`detect`:

1. A *simulated* inventory file, when one is configured (demo and test machines have no
   GPU, and the product still has to show the design's reference hardware).
2. NVML through ``pynvml`` (nvidia-ml-py): the same library the driver ships, fast and
   precise.
3. ``nvidia-smi`` as a subprocess: present on hosts where the Python process cannot load
   ``libnvidia-ml.so.1`` (e.g. the app runs in a container without the driver libraries
   mounted, but the binary is reachable).

"Unavailable" (no library, no binary) and "broken" (garbage output, a GPU that fell off the
bus) are different failures on purpose: unavailable means "fall back to the next source",
broken means "do not trust this scan", and the caller keeps the last good inventory instead
of replacing it with an empty one.

This module knows nothing about Django; the ``devices`` models and services call it.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import pynvml

logger = logging.getLogger(__name__)

MIB: Final = 1024**2


# --------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------


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
    """Where a :class:`Detection` came from."""

    NVML = "nvml"
    NVIDIA_SMI = "nvidia-smi"
    SIMULATED = "simulated"
    NONE = "none"


@dataclass(frozen=True)
class Detection:
    """Result of :func:`detect`: the source used, the GPUs, and why (for fallbacks)."""

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


class NvmlUnavailable(DetectionError):
    """NVML cannot be used on this host at all (library missing, driver not loaded).

    ``reason`` is a short phrase for composing messages such as the one :func:`detect`
    returns when no source is available.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        message = f"NVML unavailable: {reason}"
        super().__init__(f"{message} ({detail})" if detail else message)


class NvidiaSmiUnavailable(DetectionError):
    """``nvidia-smi`` cannot be used on this host (not on PATH, or no driver behind it).

    ``reason`` is a short phrase, like :attr:`NvmlUnavailable.reason`.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        message = f"nvidia-smi unavailable: {reason}"
        super().__init__(f"{message} ({detail})" if detail else message)


# --------------------------------------------------------------------------------------
# Simulated inventory
# --------------------------------------------------------------------------------------

_COMPUTE_CAPABILITY_RE: Final = re.compile(r"[1-9][0-9]*\.[0-9]+")
# Real UUIDs are "GPU-" + 8-4-4-4-12 hex digits; assignments and the runtime helper match
# on them, so a simulated file must use the same alphabet (but any grouping) to be useful.
_UUID_RE: Final = re.compile(r"GPU-[0-9a-fA-F]+(?:-[0-9a-fA-F]+)*")

_REQUIRED_GPU_KEYS: Final = (
    "index",
    "name",
    "vram_total_mb",
    "vram_used_mb",
    "compute_capability",
)
_OPTIONAL_GPU_KEYS: Final = (
    "uuid",
    "utilization_percent",
    "temperature_c",
    "power_w",
    "vram_reserved_mb",
)
_ALLOWED_TOP_LEVEL_KEYS: Final = ("gpus",)


def simulated_uuid(index: int) -> str:
    """Return the stable fake UUID a simulated GPU gets when its entry has none.

    Shaped like a real one (``GPU-`` + 8-4-4-4-12 hex digits) so code that parses or
    displays UUIDs needs no special case.
    """
    return f"GPU-00000000-0000-0000-0000-{index:012d}"


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json`` object hook: a repeated key is an error, not "last one wins".

    With "last one wins" a hand-edited file can silently show a different value than the
    one the person is looking at.
    """
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_constant(name: str) -> Any:
    """``json`` hook: Python accepts NaN and Infinity, JSON (and the API's clients) do not."""
    raise _NonStandardConstantError(name)


class _NonStandardConstantError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _is_int(value: object) -> bool:
    # bool is a subclass of int in Python, but `true` is never a valid GPU index.
    return isinstance(value, int) and not isinstance(value, bool)


def read_simulated(path: Path) -> tuple[GpuReading, ...]:
    """Load a simulated GPU inventory from ``path``.

    The format is the body of ``GET /api/system/gpus``::

        {"gpus": [{"index": 0, "name": "NVIDIA RTX A5500", "vram_total_mb": 24564,
                   "vram_used_mb": 19304, "compute_capability": "8.6"}, ...]}

    Each entry needs ``index``, ``name``, ``vram_total_mb``, ``vram_used_mb`` and
    ``compute_capability`` (the last three may be ``null``, as the API reports them for
    GPUs that cannot provide them) and may have ``uuid``, ``utilization_percent``,
    ``temperature_c`` and ``power_w``. Anything else is rejected: a typo such as
    ``vram_totl_mb`` should fail loudly instead of being ignored.

    Returns the GPUs sorted by index. Raises :class:`DetectionError` naming the file, the
    entry and the field for every problem.
    """
    where = f"Simulated GPU file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DetectionError(f"{where} does not exist.") from None
    except UnicodeDecodeError as error:
        raise DetectionError(f"{where} is not UTF-8 text (byte offset {error.start}).") from None
    except OSError as error:
        raise DetectionError(f"{where} cannot be read: {error.strerror or error}.") from None

    try:
        document = json.loads(
            text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as error:
        raise DetectionError(
            f"{where} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}."
        ) from None
    except _DuplicateKeyError as error:
        raise DetectionError(f"{where}: key {error.key!r} appears twice in one object.") from None
    except _NonStandardConstantError as error:
        raise DetectionError(
            f"{where} is not valid JSON: {error.name} is not a JSON number."
        ) from None

    if not isinstance(document, dict):
        raise DetectionError(
            f'{where}: the top level must be an object like {{"gpus": [...]}}, '
            f"not {_json_type(document)}."
        )
    unknown = sorted(set(document) - set(_ALLOWED_TOP_LEVEL_KEYS))
    if unknown:
        raise DetectionError(
            f"{where}: unknown top-level key(s) {', '.join(map(repr, unknown))}; "
            'only "gpus" is allowed.'
        )
    if "gpus" not in document:
        raise DetectionError(f'{where}: the top-level "gpus" list is missing.')
    entries = document["gpus"]
    if not isinstance(entries, list):
        raise DetectionError(f'{where}: "gpus" must be a list, not {_json_type(entries)}.')

    readings = [
        _parse_simulated_entry(where, position, entry) for position, entry in enumerate(entries)
    ]

    seen_indexes: dict[int, int] = {}
    seen_uuids: dict[str, int] = {}
    for position, reading in enumerate(readings):
        if reading.index in seen_indexes:
            raise DetectionError(
                f"{where}: gpus[{position}].index: {reading.index} is already used by "
                f"gpus[{seen_indexes[reading.index]}]; indexes must be unique."
            )
        seen_indexes[reading.index] = position
        if reading.uuid in seen_uuids:
            raise DetectionError(
                f"{where}: gpus[{position}].uuid: {reading.uuid} is already used by "
                f"gpus[{seen_uuids[reading.uuid]}]; UUIDs must be unique."
            )
        seen_uuids[reading.uuid] = position

    return tuple(sorted(readings, key=lambda reading: reading.index))


def _json_type(value: object) -> str:
    """Name a parsed JSON value's type the way the file's author would."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _parse_simulated_entry(where: str, position: int, entry: object) -> GpuReading:
    """Validate one element of ``"gpus"`` and turn it into a :class:`GpuReading`."""
    at = f"{where}: gpus[{position}]"
    if not isinstance(entry, dict):
        raise DetectionError(f"{at} must be an object, not {_json_type(entry)}.")

    unknown = sorted(set(entry) - set(_REQUIRED_GPU_KEYS) - set(_OPTIONAL_GPU_KEYS))
    if unknown:
        allowed = ", ".join(_REQUIRED_GPU_KEYS + _OPTIONAL_GPU_KEYS)
        raise DetectionError(
            f"{at}: unknown key(s) {', '.join(map(repr, unknown))}; allowed keys are {allowed}."
        )
    for key in _REQUIRED_GPU_KEYS:
        if key not in entry:
            raise DetectionError(f"{at}.{key}: required field is missing.")

    def fail(field: str, problem: str) -> DetectionError:
        return DetectionError(f"{at}.{field}: {problem} (got {json.dumps(entry[field])}).")

    def optional_int(field: str, maximum: int | None = None) -> int | None:
        value = entry.get(field)
        if value is None:
            return None
        if not _is_int(value) or value < 0:
            raise fail(field, "must be a whole number >= 0, or null")
        if maximum is not None and value > maximum:
            raise fail(field, f"must be at most {maximum}")
        return int(value)

    index = entry["index"]
    if not _is_int(index) or index < 0:
        raise fail("index", "must be a whole number >= 0")

    name = entry["name"]
    if not isinstance(name, str) or not name.strip():
        raise fail("name", "must be a non-empty string")

    vram_total_mb = optional_int("vram_total_mb")
    vram_used_mb = optional_int("vram_used_mb")
    if vram_total_mb is not None and vram_used_mb is not None and vram_used_mb > vram_total_mb:
        raise fail("vram_used_mb", f"must not exceed vram_total_mb ({vram_total_mb})")
    vram_reserved_mb = optional_int("vram_reserved_mb")
    if (
        vram_total_mb is not None
        and vram_reserved_mb is not None
        and vram_reserved_mb + (vram_used_mb or 0) > vram_total_mb
    ):
        raise fail(
            "vram_reserved_mb", f"plus vram_used_mb must not exceed vram_total_mb ({vram_total_mb})"
        )

    compute_capability = entry["compute_capability"]
    if compute_capability is not None and (
        not isinstance(compute_capability, str)
        or not _COMPUTE_CAPABILITY_RE.fullmatch(compute_capability)
    ):
        raise fail("compute_capability", 'must be a string like "8.6", or null')

    uuid = entry.get("uuid", simulated_uuid(index))
    if not isinstance(uuid, str) or not _UUID_RE.fullmatch(uuid):
        raise fail("uuid", 'must be a string like "GPU-00000000-0000-0000-0000-000000000000"')

    utilization_percent = optional_int("utilization_percent", maximum=100)
    temperature_c = optional_int("temperature_c")

    power_w = entry.get("power_w")
    if power_w is not None and (
        not isinstance(power_w, int | float) or isinstance(power_w, bool) or power_w < 0
    ):
        raise fail("power_w", "must be a number >= 0, or null")

    return GpuReading(
        index=index,
        uuid=uuid,
        name=name.strip(),
        vram_total_mb=vram_total_mb,
        vram_used_mb=vram_used_mb,
        compute_capability=compute_capability,
        utilization_percent=utilization_percent,
        temperature_c=temperature_c,
        power_w=None if power_w is None else float(power_w),
        vram_reserved_mb=vram_reserved_mb,
    )


# --------------------------------------------------------------------------------------
# NVML
# --------------------------------------------------------------------------------------

# Errors that mean "this host has no usable NVML", as opposed to "NVML is there but
# something went wrong". Only these let detect() fall back to nvidia-smi.
_NVML_UNAVAILABLE_REASONS: Final[dict[type[Exception], str]] = {
    pynvml.NVMLError_LibraryNotFound: "NVML library not found",
    pynvml.NVMLError_DriverNotLoaded: "NVIDIA driver not loaded",
}

# A reading the GPU or the driver does not offer: report None, keep scanning.
_NVML_OPTIONAL_ERRORS: Final = (pynvml.NVMLError_NotSupported, pynvml.NVMLError_NoPermission)


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


def read_nvml() -> tuple[GpuReading, ...]:
    """Read every GPU through NVML.

    Raises :class:`NvmlUnavailable` when the library or the driver is missing (fall back
    to another source) and :class:`DetectionError` for any other NVML failure, naming the
    GPU index when a single GPU failed (e.g. ``GpuIsLost`` mid-scan).
    """
    return read_nvml_scan(with_processes=False).gpus


@dataclass(frozen=True)
class NvmlScan:
    """One NVML session's readings, and its per-process memory when asked for."""

    gpus: tuple[GpuReading, ...]
    processes: tuple[GpuProcess, ...] | None = None
    process_note: str = ""
    unmeasured_uuids: tuple[str, ...] = ()


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
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as error:
            # The readings are complete; a failed shutdown must not turn them into an
            # error (or replace the real error that is already propagating).
            logger.warning("nvmlShutdown failed: %s", error)


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


# --------------------------------------------------------------------------------------
# nvidia-smi
# --------------------------------------------------------------------------------------

# Field order matters: it is the column order of the CSV output.
_SMI_REQUIRED_FIELDS: Final = ("index", "uuid", "name", "memory.total", "memory.used")
# Fields an older driver may reject ("compute_cap" arrived with the R510 drivers); each
# one can be dropped from the query and reported as None instead.
_SMI_OPTIONAL_FIELDS: Final = ("compute_cap", "utilization.gpu", "temperature.gpu", "power.draw")
SMI_QUERY_FIELDS: Final = _SMI_REQUIRED_FIELDS + _SMI_OPTIONAL_FIELDS

# nvidia-smi prints this (on stdout, exit status 2) for a field it does not know.
_SMI_INVALID_FIELD_RE: Final = re.compile(r'Field "([^"]+)" is not a valid field to query')
# nvidia-smi's documented exit codes for "there is no driver/library to talk to".
_SMI_UNAVAILABLE_EXIT_CODES: Final = {
    9: "nvidia-smi cannot communicate with the NVIDIA driver",
    12: "nvidia-smi cannot find the NVML library",
}
# Placeholders nvidia-smi prints instead of a value the GPU cannot provide. Any other
# "[...]" text ("[Insufficient Permissions]", "[Unknown Error]") in an optional field is
# treated the same way: the reading is missing, the rest of the row is fine.
_SMI_NOT_AVAILABLE: Final = {"N/A", "[N/A]", "[Not Supported]", "Not Supported", ""}
# Placeholders that mean the GPU itself is in trouble: the scan is not trustworthy.
_SMI_GPU_FAILURE: Final = {"[GPU is lost]", "[GPU requires reset]"}


def _smi_missing(value: str) -> bool:
    return value in _SMI_NOT_AVAILABLE or (value.startswith("[") and value.endswith("]"))


def _smi_command(executable: str, fields: Iterable[str]) -> list[str]:
    return [executable, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]


def _trimmed(output: str, limit: int = 500) -> str:
    """Collapse a tool's output to one readable line for an error message."""
    text = " ".join(output.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_nvidia_smi(
    executable: str = "nvidia-smi", timeout_s: float = 10
) -> tuple[GpuReading, ...]:
    """Read every GPU by running ``nvidia-smi --query-gpu=...`` (no shell).

    Fields an older driver rejects (``compute_cap`` before R510) are dropped from the
    query one at a time and reported as ``None``.

    Raises :class:`NvidiaSmiUnavailable` when the executable is not found or reports that
    no driver is loaded, and :class:`DetectionError` for a timeout, any other non-zero
    exit, or output that cannot be parsed (quoting the offending line).
    """
    resolved = shutil.which(executable)
    if resolved is None:
        raise NvidiaSmiUnavailable(f"{executable} not on PATH")

    fields = list(SMI_QUERY_FIELDS)
    # Bounded: each retry removes one optional field, so this cannot loop forever.
    for _attempt in range(len(_SMI_OPTIONAL_FIELDS) + 1):
        command = _smi_command(resolved, fields)
        completed = _run_nvidia_smi(
            command,
            timeout_s,
            f"nvidia-smi did not answer within {timeout_s:g} s; the driver may be hung.",
        )

        if completed.returncode == 0:
            return _parse_smi_output(completed.stdout, fields)

        # nvidia-smi writes most of its errors to stdout, so look at both streams.
        output = f"{completed.stderr}\n{completed.stdout}"
        rejected = _rejected_optional_field(output, fields)
        if rejected is not None:
            logger.info(
                "nvidia-smi rejects the %r field (old driver); retrying without it", rejected
            )
            fields.remove(rejected)
            continue
        if "No devices were found" in output:
            # The driver answered and there are no GPUs: an inventory, not a failure.
            return ()
        if completed.returncode in _SMI_UNAVAILABLE_EXIT_CODES:
            raise NvidiaSmiUnavailable(
                _SMI_UNAVAILABLE_EXIT_CODES[completed.returncode], _trimmed(output)
            )
        raise DetectionError(
            f"nvidia-smi failed with exit status {completed.returncode}: "
            f"{_trimmed(completed.stderr) or _trimmed(completed.stdout) or 'no output'}"
        )

    # Only reachable if nvidia-smi keeps rejecting fields we no longer send.
    raise DetectionError("nvidia-smi kept rejecting the GPU query fields.")


def _rejected_optional_field(output: str, fields: list[str]) -> str | None:
    """Return the optional field nvidia-smi's error ``output`` complains about, if any."""
    match = _SMI_INVALID_FIELD_RE.search(output)
    if match is not None:
        field = match.group(1)
        return field if field in fields and field in _SMI_OPTIONAL_FIELDS else None
    # Unknown wording (other driver versions): accept any mention of an optional field
    # that we still send, as long as the output does not look like a generic failure.
    if "field" in output.lower():
        for field in fields:
            if field in _SMI_OPTIONAL_FIELDS and re.search(rf"\b{re.escape(field)}\b", output):
                return field
    return None


def _parse_smi_output(stdout: str, fields: list[str]) -> tuple[GpuReading, ...]:
    """Parse ``--format=csv,noheader,nounits`` output for the queried ``fields``."""
    readings: list[GpuReading] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        # One reader per line so a stray quote cannot swallow the following lines.
        # nvidia-smi separates values with ", "; skipinitialspace drops the blank.
        row = next(csv.reader([line], skipinitialspace=True), [])
        readings.append(_parse_smi_row(line, [value.strip() for value in row], fields))

    indexes = [reading.index for reading in readings]
    if len(set(indexes)) != len(indexes):
        raise DetectionError(f"nvidia-smi reported the same GPU index twice: {_trimmed(stdout)!r}.")
    return tuple(readings)


def _parse_smi_row(line: str, values: list[str], fields: list[str]) -> GpuReading:
    """Turn one CSV row into a :class:`GpuReading`, rejecting anything unexpected."""

    def bad(problem: str) -> DetectionError:
        return DetectionError(f"nvidia-smi printed an unexpected line ({problem}): {line!r}")

    if len(values) != len(fields):
        raise bad(f"expected {len(fields)} values, got {len(values)}")
    by_field = dict(zip(fields, values, strict=True))

    for value in values:
        if value in _SMI_GPU_FAILURE:
            raise DetectionError(
                f"nvidia-smi reports GPU {by_field['index']} as {value.strip('[]')}: {line!r}"
            )

    def number[N: (int, float)](field: str, convert: Callable[[str], N]) -> N:
        value = by_field[field]
        try:
            result = convert(value)
        except ValueError:
            raise bad(f"{field} is {value!r}, not a number") from None
        if result < 0:
            raise bad(f"{field} is negative")
        return result

    def optional_number[N: (int, float)](field: str, convert: Callable[[str], N]) -> N | None:
        value = by_field.get(field)
        # None: not queried because the driver rejected the field.
        if value is None or _smi_missing(value):
            return None
        return number(field, convert)

    index = number("index", int)
    vram_total_mb = number("memory.total", int)

    name = by_field["name"]
    if _smi_missing(name):
        raise bad("the GPU name is missing")
    uuid = by_field["uuid"]
    if not uuid.startswith(("GPU-", "MIG-")):
        raise bad(f"uuid is {uuid!r}")

    compute_capability = by_field.get("compute_cap")
    if compute_capability is not None and _smi_missing(compute_capability):
        compute_capability = None
    elif compute_capability is not None and not _COMPUTE_CAPABILITY_RE.fullmatch(
        compute_capability
    ):
        raise bad(f"compute_cap is {compute_capability!r}")

    return GpuReading(
        index=index,
        uuid=uuid,
        name=name,
        vram_total_mb=vram_total_mb,
        vram_used_mb=optional_number("memory.used", int),
        compute_capability=compute_capability,
        utilization_percent=optional_number("utilization.gpu", int),
        temperature_c=optional_number("temperature.gpu", int),
        power_w=optional_number("power.draw", float),
    )


SMI_PROCESS_FIELDS: Final = ("pid", "gpu_uuid", "used_memory")


def read_nvidia_smi_processes(
    executable: str = "nvidia-smi", timeout_s: float = 10
) -> tuple[GpuProcess, ...]:
    """The compute processes of every GPU, from ``nvidia-smi --query-compute-apps``.

    The fallback for hosts where NVML cannot be loaded. nvidia-smi lists compute processes
    only (graphics ones are not queryable this way). Memory is MiB; ``[N/A]`` becomes None.
    Raises :class:`NvidiaSmiUnavailable` or :class:`DetectionError` like
    :func:`read_nvidia_smi`.
    """
    resolved = shutil.which(executable)
    if resolved is None:
        raise NvidiaSmiUnavailable(f"{executable} not on PATH")
    command = [
        resolved,
        f"--query-compute-apps={','.join(SMI_PROCESS_FIELDS)}",
        "--format=csv,noheader,nounits",
    ]
    completed = _run_nvidia_smi(
        command, timeout_s, f"nvidia-smi did not list the GPU processes within {timeout_s:g} s."
    )
    if completed.returncode != 0:
        output = f"{completed.stderr}\n{completed.stdout}"
        raise DetectionError(
            f"nvidia-smi could not list the GPU processes (exit status {completed.returncode}): "
            f"{_trimmed(output) or 'no output'}"
        )
    processes: list[GpuProcess] = []
    for line in completed.stdout.splitlines():
        if not line.strip() or "No running processes found" in line:
            continue
        values = [v.strip() for v in next(csv.reader([line], skipinitialspace=True), [])]
        if len(values) != len(SMI_PROCESS_FIELDS):
            raise DetectionError(f"nvidia-smi printed an unexpected process line: {line!r}")
        pid_text, uuid, used_text = values
        try:
            pid = int(pid_text)
            used = None if _smi_missing(used_text) else int(used_text)
        except ValueError:
            raise DetectionError(
                f"nvidia-smi printed an unexpected process line: {line!r}"
            ) from None
        processes.append(GpuProcess(pid, uuid, used, "compute"))
    return tuple(processes)


# --------------------------------------------------------------------------------------
# The chain
# --------------------------------------------------------------------------------------


def detect(simulated_path: Path | None = None, *, with_processes: bool = False) -> Detection:
    """Detect this host's GPUs from the best available source.

    With ``simulated_path`` the file is the only source (its errors propagate as
    :class:`DetectionError`: a demo configured with a broken file should say so, not
    silently show real or no hardware). Otherwise NVML, then nvidia-smi when NVML is
    unavailable, then an empty inventory with a message saying why. A source that is
    present but fails raises :class:`DetectionError`, so the caller keeps the last good
    inventory.

    ``with_processes`` also lists the processes holding GPU memory (NVML in the same
    session, or ``nvidia-smi --query-compute-apps``). A simulated inventory has none to
    list: ``processes`` stays None (not measured). A failed process query never fails the
    detection; it leaves ``processes`` None and says why in ``process_note``.
    """
    if simulated_path is not None:
        return Detection(DetectionSource.SIMULATED, read_simulated(simulated_path))

    try:
        scan = read_nvml_scan(with_processes=with_processes)
        return Detection(
            DetectionSource.NVML,
            scan.gpus,
            processes=scan.processes,
            process_note=scan.process_note,
            unmeasured_uuids=scan.unmeasured_uuids,
        )
    except NvmlUnavailable as nvml_error:
        nvml_reason = nvml_error.reason

    try:
        gpus = read_nvidia_smi()
    except NvidiaSmiUnavailable as smi_error:
        return Detection(
            DetectionSource.NONE,
            (),
            message=f"No GPUs detected: {nvml_reason} and {smi_error.reason}",
        )
    processes: tuple[GpuProcess, ...] | None = None
    process_note = ""
    if with_processes:
        try:
            processes = read_nvidia_smi_processes()
        except DetectionError as error:
            process_note = str(error)
    return Detection(
        DetectionSource.NVIDIA_SMI,
        gpus,
        message=f"Read through nvidia-smi because {nvml_reason}.",
        processes=processes,
        process_note=process_note,
    )


def _run_nvidia_smi(
    command: list[str], timeout_s: float, too_slow: str
) -> subprocess.CompletedProcess[str]:
    """Run nvidia-smi from an argument list; a timeout or a failed start is a DetectionError."""
    try:
        return subprocess.run(
            command,
            capture_output=True,
            # Never let a stray non-UTF-8 byte turn into a UnicodeDecodeError.
            encoding="utf-8",
            errors="replace",
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DetectionError(too_slow) from None
    except OSError as error:
        raise DetectionError(
            f"nvidia-smi ({command[0]}) could not be started: {error.strerror or error}."
        ) from None
