"""A GPU's own account of its health, and the verdict drawn from it (pure: no I/O).

Sources fill :class:`HealthReadings` (NVML: ``nvml_health.py``; nvidia-smi:
``nvidia_smi_health.py``; a simulated file's ``health`` object) and the Xid watcher
(``xid_events.py``) adds the Xid events it saw. :func:`assess` turns both into a
:class:`GpuHealth`: healthy, warning, critical or unknown, with one sentence per reason.
The table of Xids and what each one means is in docs/health.md, with its source.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final


class HealthState(StrEnum):
    """How a GPU is doing, worst last (the order :func:`worst` relies on)."""

    HEALTHY = "healthy"
    UNKNOWN = "unknown"
    WARNING = "warning"
    CRITICAL = "critical"


_SEVERITY: Final = {
    HealthState.HEALTHY: 0,
    HealthState.UNKNOWN: 1,
    HealthState.WARNING: 2,
    HealthState.CRITICAL: 3,
}

# NVML's clock-event (throttle) reason bits (nvmlClocksEventReason*) by the name the API,
# the simulated file and nvidia-smi's -q output use. Only the ones that mean "the card
# protects itself" are reasons for a warning; idle, application clocks, sync boost,
# display clocks and the software power cap (routine at full load) are not.
CLOCK_EVENT_BITS: Final[dict[str, int]] = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}
_CLOCK_EVENT_WARNINGS: Final[dict[str, str]] = {
    "hw_slowdown": "hardware slowdown (overheating or a power supply problem)",
    "sw_thermal_slowdown": "the driver's thermal slowdown",
    "hw_thermal_slowdown": "hardware thermal slowdown",
    "hw_power_brake_slowdown": "the power brake (the system's power supply asked it to)",
}

# Xids that mean the GPU is lost or must be reset before it can be trusted again: they
# cordon the GPU. Meanings from NVIDIA's Xid catalogue (docs/health.md has the source).
CRITICAL_XIDS: Final[dict[int, str]] = {
    48: "double-bit ECC error",
    62: "internal micro-controller halt",
    64: "ECC page retirement or row remapping recording failure",
    79: "GPU has fallen off the bus",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
    140: "unrecovered ECC error",
}
# Xids an application's own fault causes (a bad kernel, a page fault in its memory): they
# are reported, but the GPU is fine for other work and is not cordoned.
APPLICATION_XIDS: Final[dict[int, str]] = {
    13: "graphics engine exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "preemptive cleanup, due to previous errors",
}
# Other Xids worth a warning, named so the sentence says more than a number.
WARNING_XIDS: Final[dict[int, str]] = {
    63: "ECC page retirement or row remapping recording event",
    74: "NVLink error",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
}

# A temperature this close to the slowdown threshold is a warning before the clocks drop.
TEMPERATURE_MARGIN_C: Final = 5


@dataclass(frozen=True)
class HealthReadings:
    """What a GPU reports about itself. None: the card does not say (NotSupported, no
    permission, a field the driver rejects) or the source cannot ask."""

    ecc_corrected_volatile: int | None = None
    ecc_uncorrected_volatile: int | None = None
    ecc_corrected_aggregate: int | None = None
    ecc_uncorrected_aggregate: int | None = None
    retired_pages: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failed: bool | None = None
    clock_events: tuple[str, ...] | None = None  # names from CLOCK_EVENT_BITS
    slowdown_temperature_c: int | None = None
    power_limit_w: float | None = None
    xids: tuple[int, ...] = ()  # Xid events recorded with the reading (simulated files)

    @property
    def memory_errors_reported(self) -> bool:
        """Whether the card says anything about its memory errors at all."""
        return any(
            value is not None
            for value in (
                self.ecc_uncorrected_volatile,
                self.ecc_uncorrected_aggregate,
                self.retired_pages_pending,
                self.remapped_rows_failed,
                self.remapped_rows_pending,
            )
        )

    def as_api_dict(self) -> dict[str, Any]:
        """The readings in the API's (and the simulated file's) shape."""
        return {
            "ecc_corrected_volatile": self.ecc_corrected_volatile,
            "ecc_uncorrected_volatile": self.ecc_uncorrected_volatile,
            "ecc_corrected_aggregate": self.ecc_corrected_aggregate,
            "ecc_uncorrected_aggregate": self.ecc_uncorrected_aggregate,
            "retired_pages": self.retired_pages,
            "retired_pages_pending": self.retired_pages_pending,
            "remapped_rows_pending": self.remapped_rows_pending,
            "remapped_rows_failed": self.remapped_rows_failed,
            "clock_events": None if self.clock_events is None else list(self.clock_events),
            "slowdown_temperature_c": self.slowdown_temperature_c,
            "power_limit_w": self.power_limit_w,
            "xids": list(self.xids),
        }


def clock_event_names(bitmask: int) -> tuple[str, ...]:
    """NVML's clock-event bitmask as names (bits GPU Config does not know are left out)."""
    return tuple(name for name, bit in CLOCK_EVENT_BITS.items() if bitmask & bit)


@dataclass(frozen=True)
class GpuHealth:
    """The verdict on one GPU: its state and one sentence per reason.

    ``cordon`` lists the critical sentences: a GPU with any is put in maintenance
    automatically (``devices.services``), unless the operator already took it out of
    maintenance with exactly these reasons standing (they acknowledged them).
    """

    state: HealthState
    reasons: tuple[str, ...] = ()
    cordon: tuple[str, ...] = ()
    readings: HealthReadings = field(default_factory=HealthReadings)

    def as_api_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "reasons": list(self.reasons),
            "cordons": bool(self.cordon),
            "readings": self.readings.as_api_dict(),
        }


# A GPU not read now (disappeared, or before its first sample).
NO_HEALTH: Final = GpuHealth(
    HealthState.UNKNOWN, ("The GPU is not detected now, so its health is unknown.",)
)


def worst(states: Iterable[HealthState]) -> HealthState:
    """The most severe of ``states`` (healthy when there are none)."""
    return max(states, key=_SEVERITY.__getitem__, default=HealthState.HEALTHY)


def xid_sentence(xid: int) -> tuple[HealthState, str]:
    """What an Xid event means, as a state and one sentence."""
    if xid in CRITICAL_XIDS:
        return (
            HealthState.CRITICAL,
            f"Xid {xid} ({CRITICAL_XIDS[xid]}): the GPU is lost or must be reset.",
        )
    if xid in APPLICATION_XIDS:
        return (
            HealthState.WARNING,
            f"Xid {xid} ({APPLICATION_XIDS[xid]}): caused by an application; the GPU stays in use.",
        )
    meaning = WARNING_XIDS.get(xid, "see NVIDIA's Xid catalogue")
    return HealthState.WARNING, f"Xid {xid} ({meaning}) was reported."


def assess(
    readings: HealthReadings | None,
    *,
    temperature_c: int | None = None,
    power_w: float | None = None,
    xids: Iterable[int] = (),
) -> GpuHealth:
    """Judge one GPU from its readings and the Xid events seen on it.

    Critical: uncorrected ECC errors since the driver loaded, a failed row remap, an Xid
    that means the GPU is lost or needs a reset. Warning: lifetime uncorrected errors, a
    pending remap or page retirement, a protective clock slowdown, a temperature at (or
    within 5 °C of) the slowdown threshold, power at its limit, any other Xid. Unknown: the
    card reports nothing about its memory errors and nothing else is wrong: never
    "healthy" for a card that cannot say.
    """
    found = readings or HealthReadings()
    findings: list[tuple[HealthState, str]] = []
    findings.extend(_memory_findings(found))
    findings.extend(_clock_findings(found, temperature_c, power_w))
    seen: set[int] = set()
    for xid in (*found.xids, *xids):
        if xid not in seen:
            seen.add(xid)
            findings.append(xid_sentence(xid))

    state = worst(state for state, _ in findings)
    reasons = tuple(sentence for _, sentence in findings)
    if not findings and not found.memory_errors_reported:
        return GpuHealth(
            HealthState.UNKNOWN,
            (
                "The GPU does not report its memory errors (ECC, retired pages, row "
                "remapping: not supported), so its health is unknown.",
            ),
            readings=found,
        )
    cordon = tuple(s for level, s in findings if level is HealthState.CRITICAL)
    return GpuHealth(state, reasons, cordon, found)


def _memory_findings(found: HealthReadings) -> list[tuple[HealthState, str]]:
    out: list[tuple[HealthState, str]] = []
    if found.ecc_uncorrected_volatile:
        out.append(
            (
                HealthState.CRITICAL,
                f"{_count(found.ecc_uncorrected_volatile, 'uncorrected ECC error')} since the "
                "driver loaded: the GPU's memory cannot be trusted until it is reset.",
            )
        )
    elif found.ecc_uncorrected_aggregate:
        out.append(
            (
                HealthState.WARNING,
                f"{_count(found.ecc_uncorrected_aggregate, 'uncorrected ECC error')} over the "
                "GPU's lifetime.",
            )
        )
    if found.remapped_rows_failed:
        out.append(
            (
                HealthState.CRITICAL,
                "Row remapping failed: the GPU's memory has a defect it can no longer "
                "repair; service or replace the GPU.",
            )
        )
    elif found.remapped_rows_pending:
        out.append((HealthState.WARNING, "A row remap is pending: reset the GPU to complete it."))
    if found.retired_pages_pending:
        out.append(
            (HealthState.WARNING, "Page retirement is pending: reset the GPU to complete it.")
        )
    return out


def _clock_findings(
    found: HealthReadings, temperature_c: int | None, power_w: float | None
) -> list[tuple[HealthState, str]]:
    out: list[tuple[HealthState, str]] = []
    for name in found.clock_events or ():
        if name in _CLOCK_EVENT_WARNINGS:
            out.append(
                (HealthState.WARNING, f"Clocks are slowed by {_CLOCK_EVENT_WARNINGS[name]}.")
            )
    threshold = found.slowdown_temperature_c
    if temperature_c is not None and threshold is not None:
        if temperature_c >= threshold:
            out.append(
                (
                    HealthState.WARNING,
                    f"Temperature {temperature_c} °C has reached the slowdown threshold "
                    f"({threshold} °C).",
                )
            )
        elif temperature_c >= threshold - TEMPERATURE_MARGIN_C:
            out.append(
                (
                    HealthState.WARNING,
                    f"Temperature {temperature_c} °C is within {TEMPERATURE_MARGIN_C} °C of "
                    f"the slowdown threshold ({threshold} °C).",
                )
            )
    limit = found.power_limit_w
    if power_w is not None and limit and power_w >= limit:
        out.append(
            (
                HealthState.WARNING,
                f"Power draw {power_w:.0f} W is at its limit ({limit:.0f} W).",
            )
        )
    return out


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
