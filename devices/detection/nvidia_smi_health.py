"""Health counters through ``nvidia-smi --query-gpu`` where NVML cannot be loaded.

One more query per sample, of the fields nvidia-smi documents for them
(``nvidia-smi --help-query-gpu``). A field the driver rejects is dropped and reads None;
any other failure leaves every GPU's health None ("unknown"), never the scan failed: the
readings already came from the main query.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
import subprocess
from typing import Final

from devices.detection.health import HealthReadings, clock_event_names

logger = logging.getLogger(__name__)

SMI_HEALTH_FIELDS: Final = (
    "uuid",
    "ecc.errors.corrected.volatile.total",
    "ecc.errors.uncorrected.volatile.total",
    "ecc.errors.corrected.aggregate.total",
    "ecc.errors.uncorrected.aggregate.total",
    "retired_pages.pending",
    "clocks_event_reasons.active",
    "power.limit",
)
_INVALID_FIELD_RE: Final = re.compile(r'Field "([^"]+)" is not a valid field to query')


def _missing(value: str) -> bool:
    return value in {"", "N/A"} or (value.startswith("[") and value.endswith("]"))


def _int(value: str) -> int | None:
    try:
        return None if _missing(value) else int(value, 0)
    except ValueError:
        return None


def _float(value: str) -> float | None:
    try:
        return None if _missing(value) else float(value)
    except ValueError:
        return None


def _yes(value: str) -> bool | None:
    return None if _missing(value) else value.strip().lower() in {"yes", "1", "enabled"}


def read_nvidia_smi_health(executable: str, timeout_s: float = 10) -> dict[str, HealthReadings]:
    """Each GPU's health counters by UUID; {} when nvidia-smi cannot say."""
    resolved = shutil.which(executable)
    if resolved is None:
        return {}
    fields = list(SMI_HEALTH_FIELDS)
    for _attempt in range(len(SMI_HEALTH_FIELDS)):
        try:
            completed = subprocess.run(
                [resolved, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                capture_output=True,
                encoding="utf-8",
                errors="replace",
                timeout=timeout_s,
                check=False,
            )
        except (subprocess.TimeoutExpired, OSError) as error:
            logger.warning("nvidia-smi health query failed: %s", error)
            return {}
        if completed.returncode == 0:
            return _parse(completed.stdout, fields)
        rejected = _INVALID_FIELD_RE.search(f"{completed.stdout}\n{completed.stderr}")
        if rejected is None or rejected.group(1) not in fields or rejected.group(1) == "uuid":
            logger.warning("nvidia-smi health query failed (exit %s)", completed.returncode)
            return {}
        fields.remove(rejected.group(1))
    return {}


def _parse(stdout: str, fields: list[str]) -> dict[str, HealthReadings]:
    out: dict[str, HealthReadings] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        values = [v.strip() for v in next(csv.reader([line], skipinitialspace=True), [])]
        if len(values) != len(fields):
            continue
        row = dict(zip(fields, values, strict=True))
        get = row.get
        events = _int(get("clocks_event_reasons.active", ""))
        out[row["uuid"]] = HealthReadings(
            ecc_corrected_volatile=_int(get("ecc.errors.corrected.volatile.total", "")),
            ecc_uncorrected_volatile=_int(get("ecc.errors.uncorrected.volatile.total", "")),
            ecc_corrected_aggregate=_int(get("ecc.errors.corrected.aggregate.total", "")),
            ecc_uncorrected_aggregate=_int(get("ecc.errors.uncorrected.aggregate.total", "")),
            retired_pages_pending=_yes(get("retired_pages.pending", "")),
            clock_events=None if events is None else clock_event_names(events),
            power_limit_w=_float(get("power.limit", "")),
        )
    return out
