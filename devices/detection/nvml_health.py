"""A GPU's health counters through NVML, read in the same session as its other readings.

Every read is optional: a card that answers NotSupported (ECC off, a consumer card, a
vGPU), NoPermission or any other NVML error for one counter leaves that counter None, and
the verdict (``health.assess``) says "unknown" rather than "healthy" when nothing about
its memory could be read. A health read never fails the scan: a GPU that is really lost
fails the scan's own reads (memory, name) already.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import pynvml

from devices.detection.health import HealthReadings, clock_event_names

# nvmlDeviceGetCurrentClocksEventReasons arrived with R535; older pynvml/drivers have the
# throttle-reasons name for the same bitmask.
_CLOCK_EVENT_FUNCTIONS: Final = (
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
)


def _maybe[T](read: Callable[[], T]) -> T | None:
    """``read()``, or None when NVML cannot give this counter for this card."""
    try:
        return read()
    except pynvml.NVMLError:
        return None


def _ecc(handle: object, error_type: int, counter: int) -> int | None:
    return _maybe(lambda: int(pynvml.nvmlDeviceGetTotalEccErrors(handle, error_type, counter)))


def _retired_pages(handle: object) -> int | None:
    """Pages retired for either cause (pre-Ampere cards; Ampere and later remap rows)."""
    total = 0
    for cause in (
        pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
        pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
    ):
        try:
            total += len(pynvml.nvmlDeviceGetRetiredPages(handle, cause))
        except pynvml.NVMLError:
            return None
    return total


def _clock_events(handle: object) -> tuple[str, ...] | None:
    for name in _CLOCK_EVENT_FUNCTIONS:
        function = getattr(pynvml, name, None)
        if function is None:
            continue
        try:
            return clock_event_names(int(function(handle)))
        except pynvml.NVMLError:
            continue
    return None


def read_nvml_health(handle: object) -> HealthReadings:
    """Every health counter NVML offers for one GPU (None where the card cannot say)."""
    corrected = pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
    uncorrected = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    volatile, aggregate = pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC
    remapped = _maybe(lambda: pynvml.nvmlDeviceGetRemappedRows(handle))
    pending = _maybe(lambda: pynvml.nvmlDeviceGetRetiredPagesPendingStatus(handle))
    slowdown = _maybe(
        lambda: int(
            pynvml.nvmlDeviceGetTemperatureThreshold(
                handle, pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
            )
        )
    )
    limit_mw = _maybe(lambda: int(pynvml.nvmlDeviceGetEnforcedPowerLimit(handle)))
    return HealthReadings(
        ecc_corrected_volatile=_ecc(handle, corrected, volatile),
        ecc_uncorrected_volatile=_ecc(handle, uncorrected, volatile),
        ecc_corrected_aggregate=_ecc(handle, corrected, aggregate),
        ecc_uncorrected_aggregate=_ecc(handle, uncorrected, aggregate),
        retired_pages=_retired_pages(handle),
        retired_pages_pending=None if pending is None else bool(pending),
        # (corrected rows, uncorrected rows, pending, failure)
        remapped_rows_pending=None if remapped is None else bool(remapped[2]),
        remapped_rows_failed=None if remapped is None else bool(remapped[3]),
        clock_events=_clock_events(handle),
        slowdown_temperature_c=slowdown,
        power_limit_w=None if limit_mw is None else limit_mw / 1000,
    )
