"""The simulated source: a JSON file in the shape of ``GET /api/system/gpus``.

Demo and test machines have no GPU, and the product still has to show the design's
reference hardware. When a file is configured it is the only source (a demo configured
with a broken file should say so, not silently show real or no hardware).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from common.json_rules import (
    DuplicateKeyError,
    NonStandardConstantError,
    json_type_name,
    no_constants,
    no_duplicate_keys,
)
from devices.detection.health import CLOCK_EVENT_BITS, HealthReadings
from devices.detection.types import (
    COMPUTE_CAPABILITY_RE,
    GFX_TARGET_RE,
    Detection,
    DetectionError,
    DetectionSource,
    GpuReading,
    GpuVendor,
)

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
    "vendor",
    "device_index",
    "render_node",
    "pci_bus",
    "integrated",
    "health",
)
_ALLOWED_TOP_LEVEL_KEYS: Final = ("gpus",)


def simulated_uuid(index: int) -> str:
    """Return the stable fake UUID a simulated GPU gets when its entry has none.

    Shaped like a real one (``GPU-`` + 8-4-4-4-12 hex digits) so code that parses or
    displays UUIDs needs no special case.
    """
    return f"GPU-00000000-0000-0000-0000-{index:012d}"


def detect_simulated(path: Path) -> Detection:
    """The file's GPUs as a :class:`Detection`; its errors propagate as DetectionError."""
    return Detection(DetectionSource.SIMULATED, read_simulated(path))


def read_simulated(path: Path) -> tuple[GpuReading, ...]:
    """Load a simulated GPU inventory from ``path``.

    The format is the body of ``GET /api/system/gpus``::

        {"gpus": [{"index": 0, "name": "NVIDIA RTX A5500", "vram_total_mb": 24564,
                   "vram_used_mb": 19304, "compute_capability": "8.6"}, ...]}

    Each entry needs ``index``, ``name``, ``vram_total_mb``, ``vram_used_mb`` and
    ``compute_capability`` (the last three may be ``null``, as the API reports them for
    GPUs that cannot provide them) and may have ``uuid``, ``utilization_percent``,
    ``temperature_c`` and ``power_w``, and ``vendor`` (``"nvidia"``, the default, or
    ``"amd"``, whose ``compute_capability`` is its gfx target such as ``"gfx1101"``),
    ``device_index`` (the vendor's own number, default ``index``), ``render_node``,
    ``pci_bus`` and ``integrated``. Anything else is rejected: a typo such as
    ``vram_totl_mb`` should fail loudly instead of being ignored.

    Returns the GPUs sorted by index. Raises :class:`DetectionError` naming the file, the
    entry and the field for every problem.
    """
    where = f"Simulated GPU file {path}"
    entries = _gpu_entries(where, _parse_json(where, _read_text(where, path)))
    readings = [
        _parse_entry(f"{where}: gpus[{position}]", entry) for position, entry in enumerate(entries)
    ]
    _check_unique(where, readings)
    return tuple(sorted(readings, key=lambda reading: reading.index))


def _read_text(where: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DetectionError(f"{where} does not exist.") from None
    except UnicodeDecodeError as error:
        raise DetectionError(f"{where} is not UTF-8 text (byte offset {error.start}).") from None
    except OSError as error:
        raise DetectionError(f"{where} cannot be read: {error.strerror or error}.") from None


def _parse_json(where: str, text: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=no_duplicate_keys, parse_constant=no_constants)
    except json.JSONDecodeError as error:
        raise DetectionError(
            f"{where} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}."
        ) from None
    except DuplicateKeyError as error:
        raise DetectionError(f"{where}: key {error.key!r} appears twice in one object.") from None
    except NonStandardConstantError as error:
        raise DetectionError(
            f"{where} is not valid JSON: {error.name} is not a JSON number."
        ) from None


def _gpu_entries(where: str, document: object) -> list[object]:
    """The ``"gpus"`` list of a parsed file, after checking the top level's shape."""
    if not isinstance(document, dict):
        raise DetectionError(
            f'{where}: the top level must be an object like {{"gpus": [...]}}, '
            f"not {json_type_name(document)}."
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
        raise DetectionError(f'{where}: "gpus" must be a list, not {json_type_name(entries)}.')
    return entries


def _check_unique(where: str, readings: list[GpuReading]) -> None:
    """Two entries with one index or one UUID would be one GPU shown twice."""
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


def _is_int(value: object) -> bool:
    # bool is a subclass of int in Python, but `true` is never a valid GPU index.
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_entry(at: str, entry: object) -> GpuReading:
    """Validate one element of ``"gpus"`` and turn it into a :class:`GpuReading`.

    ``at`` locates the entry in messages ("Simulated GPU file x.json: gpus[1]"). Fields are
    checked in a fixed order, so a file with several problems always names the same one.
    """
    if not isinstance(entry, dict):
        raise DetectionError(f"{at} must be an object, not {json_type_name(entry)}.")
    unknown = sorted(set(entry) - set(_REQUIRED_GPU_KEYS) - set(_OPTIONAL_GPU_KEYS))
    if unknown:
        allowed = ", ".join(_REQUIRED_GPU_KEYS + _OPTIONAL_GPU_KEYS)
        raise DetectionError(
            f"{at}: unknown key(s) {', '.join(map(repr, unknown))}; allowed keys are {allowed}."
        )
    for key in _REQUIRED_GPU_KEYS:
        if key not in entry:
            raise DetectionError(f"{at}.{key}: required field is missing.")

    fields = _EntryFields(at, entry)
    index = fields.index()
    name = fields.name()
    vram_total_mb, vram_used_mb, vram_reserved_mb = fields.memory()
    vendor = fields.vendor()
    compute_capability = fields.compute_capability(vendor)
    uuid = fields.uuid(index)
    utilization_percent = fields.optional_int("utilization_percent", maximum=100)
    temperature_c = fields.optional_int("temperature_c")
    power_w = fields.power_w()
    return GpuReading(
        index=index,
        uuid=uuid,
        name=name,
        vram_total_mb=vram_total_mb,
        vram_used_mb=vram_used_mb,
        compute_capability=compute_capability,
        utilization_percent=utilization_percent,
        temperature_c=temperature_c,
        power_w=power_w,
        vram_reserved_mb=vram_reserved_mb,
        vendor=vendor,
        device_index=fields.optional_int("device_index"),
        render_node=fields.optional_text("render_node"),
        pci_bus=fields.optional_text("pci_bus"),
        integrated=fields.flag("integrated"),
        health=_health(f"{at}.health", entry.get("health")),
    )


@dataclass(frozen=True)
class _EntryFields:
    """The field checks of one entry whose keys are known to be right."""

    at: str
    entry: dict[str, Any]

    def fail(self, field: str, problem: str) -> DetectionError:
        return DetectionError(
            f"{self.at}.{field}: {problem} (got {json.dumps(self.entry[field])})."
        )

    def optional_int(self, field: str, maximum: int | None = None) -> int | None:
        value = self.entry.get(field)
        if value is None:
            return None
        if not _is_int(value) or value < 0:
            raise self.fail(field, "must be a whole number >= 0, or null")
        if maximum is not None and value > maximum:
            raise self.fail(field, f"must be at most {maximum}")
        return int(value)

    def index(self) -> int:
        index = self.entry["index"]
        if not _is_int(index) or index < 0:
            raise self.fail("index", "must be a whole number >= 0")
        return int(index)

    def name(self) -> str:
        name = self.entry["name"]
        if not isinstance(name, str) or not name.strip():
            raise self.fail("name", "must be a non-empty string")
        return name.strip()

    def memory(self) -> tuple[int | None, int | None, int | None]:
        """Total, used and reserved MiB; used plus the reserve must fit in the total."""
        total = self.optional_int("vram_total_mb")
        used = self.optional_int("vram_used_mb")
        if total is not None and used is not None and used > total:
            raise self.fail("vram_used_mb", f"must not exceed vram_total_mb ({total})")
        reserved = self.optional_int("vram_reserved_mb")
        if total is not None and reserved is not None and reserved + (used or 0) > total:
            raise self.fail(
                "vram_reserved_mb", f"plus vram_used_mb must not exceed vram_total_mb ({total})"
            )
        return total, used, reserved

    def compute_capability(self, vendor: GpuVendor) -> str | None:
        capability = self.entry["compute_capability"]
        if capability is None:
            return None
        if vendor is GpuVendor.AMD:
            if not isinstance(capability, str) or not GFX_TARGET_RE.fullmatch(capability):
                raise self.fail(
                    "compute_capability", 'must be an AMD gfx target like "gfx1101", or null'
                )
            return capability
        if not isinstance(capability, str) or not COMPUTE_CAPABILITY_RE.fullmatch(capability):
            raise self.fail("compute_capability", 'must be a string like "8.6", or null')
        return capability

    def vendor(self) -> GpuVendor:
        vendor = self.entry.get("vendor", GpuVendor.NVIDIA.value)
        if vendor not in {v.value for v in GpuVendor}:
            raise self.fail("vendor", 'must be "nvidia" or "amd"')
        return GpuVendor(vendor)

    def optional_text(self, field: str) -> str | None:
        value = self.entry.get(field)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(field, "must be a non-empty string, or null")
        return value.strip()

    def flag(self, field: str) -> bool:
        value = self.entry.get(field, False)
        if not isinstance(value, bool):
            raise self.fail(field, "must be true or false")
        return value

    def uuid(self, index: int) -> str:
        uuid = self.entry.get("uuid", simulated_uuid(index))
        if not isinstance(uuid, str) or not _UUID_RE.fullmatch(uuid):
            raise self.fail(
                "uuid", 'must be a string like "GPU-00000000-0000-0000-0000-000000000000"'
            )
        return uuid

    def power_w(self) -> float | None:
        power_w = self.entry.get("power_w")
        if power_w is None:
            return None
        if not isinstance(power_w, int | float) or isinstance(power_w, bool) or power_w < 0:
            raise self.fail("power_w", "must be a number >= 0, or null")
        return float(power_w)


_HEALTH_COUNTS: Final = (
    "ecc_corrected_volatile",
    "ecc_uncorrected_volatile",
    "ecc_corrected_aggregate",
    "ecc_uncorrected_aggregate",
    "retired_pages",
    "slowdown_temperature_c",
)
_HEALTH_FLAGS: Final = ("retired_pages_pending", "remapped_rows_pending", "remapped_rows_failed")


def _health(at: str, value: object) -> HealthReadings | None:
    """A simulated GPU's ``health`` object: the counters NVML would report (``null`` or
    absent: not reported), ``clock_events`` as names and ``xids`` as numbers, so a demo
    can show a warning or a critical card."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DetectionError(f"{at} must be an object, not {json_type_name(value)}.")
    readings = value.get("readings")
    if isinstance(readings, dict) and "state" in value:
        # The GPUs API's shape (the verdict with its readings): replay the readings.
        value, at = readings, f"{at}.readings"
    known = (*_HEALTH_COUNTS, *_HEALTH_FLAGS, "clock_events", "power_limit_w", "xids")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise DetectionError(
            f"{at}: unknown key(s) {', '.join(map(repr, unknown))}; allowed keys are "
            f"{', '.join(known)}."
        )
    counts: dict[str, int | None] = {}
    for key in _HEALTH_COUNTS:
        number = value.get(key)
        if number is not None and (not _is_int(number) or number < 0):
            raise DetectionError(f"{at}.{key}: must be a whole number >= 0, or null.")
        counts[key] = number
    flags: dict[str, bool | None] = {}
    for key in _HEALTH_FLAGS:
        flag = value.get(key)
        if flag is not None and not isinstance(flag, bool):
            raise DetectionError(f"{at}.{key}: must be true, false or null.")
        flags[key] = flag
    events = value.get("clock_events")
    if events is not None and (
        not isinstance(events, list) or any(e not in CLOCK_EVENT_BITS for e in events)
    ):
        raise DetectionError(
            f"{at}.clock_events: must be a list of {', '.join(CLOCK_EVENT_BITS)}, or null."
        )
    xids = value.get("xids", [])
    if not isinstance(xids, list) or not all(_is_int(x) and x > 0 for x in xids):
        raise DetectionError(f"{at}.xids: must be a list of Xid numbers.")
    limit = value.get("power_limit_w")
    if limit is not None and (
        not isinstance(limit, int | float) or isinstance(limit, bool) or limit <= 0
    ):
        raise DetectionError(f"{at}.power_limit_w: must be a number > 0, or null.")
    return HealthReadings(
        ecc_corrected_volatile=counts["ecc_corrected_volatile"],
        ecc_uncorrected_volatile=counts["ecc_uncorrected_volatile"],
        ecc_corrected_aggregate=counts["ecc_corrected_aggregate"],
        ecc_uncorrected_aggregate=counts["ecc_uncorrected_aggregate"],
        retired_pages=counts["retired_pages"],
        retired_pages_pending=flags["retired_pages_pending"],
        remapped_rows_pending=flags["remapped_rows_pending"],
        remapped_rows_failed=flags["remapped_rows_failed"],
        clock_events=None if events is None else tuple(events),
        slowdown_temperature_c=counts["slowdown_temperature_c"],
        power_limit_w=None if limit is None else float(limit),
        xids=tuple(int(x) for x in xids),
    )
