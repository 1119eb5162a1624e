"""NVML's health functions and its event set, faked at the ``pynvml`` boundary as NVML
documents them: beside ``conftest.FakeNvml`` (which fakes the readings).

A card answers NotSupported for every health function unless its :class:`CardHealth` says
otherwise (ECC off or a consumer card), as NVML does; ``nvmlEventSetWait_v2`` blocks up to
its timeout and raises ``NVMLError_Timeout`` when no event came, as NVML's does.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from types import SimpleNamespace

import pynvml
import pytest

from devices.tests.conftest import FakeHandle, FakeNvml


@dataclass
class CardHealth:
    """What one fake card answers; None: NotSupported."""

    # (error type, counter type) -> count, e.g. (UNCORRECTED, VOLATILE): 2
    ecc: dict[tuple[int, int], int] | None = None
    remapped_rows: tuple[int, int, int, int] | None = None  # corr, unc, pending, failure
    retired_pages_pending: int | None = None
    retired_pages: dict[int, list[int]] | None = None  # cause -> page addresses
    clock_events: int | None = None
    slowdown_c: int | None = None
    power_limit_mw: int | None = None
    events_supported: bool = True

    @classmethod
    def clean(cls, **changes: object) -> CardHealth:
        """A data-centre card with ECC on and nothing wrong (as the recorded H100)."""
        card = cls(
            ecc={(t, c): 0 for t in (0, 1) for c in (0, 1)},
            remapped_rows=(0, 0, 0, 0),
            retired_pages_pending=0,
            clock_events=pynvml.nvmlClocksEventReasonGpuIdle,
            slowdown_c=87,
            power_limit_mw=700_000,
        )
        for name, value in changes.items():
            setattr(card, name, value)
        return card


@dataclass
class HealthNvml:
    nvml: FakeNvml
    cards: dict[int, CardHealth] = field(default_factory=dict)
    events: queue.Queue[tuple[int, int]] = field(default_factory=queue.Queue)
    registered: list[int] = field(default_factory=list)
    wait_calls: int = 0

    def xid(self, gpu_index: int, xid: int) -> None:
        """The driver reports an Xid on a GPU: the next wait returns it."""
        self.events.put((gpu_index, xid))

    def _card(self, handle: object) -> CardHealth:
        assert isinstance(handle, FakeHandle)
        return self.cards.get(handle.index, CardHealth())

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def supported[T](value: T | None) -> T:
            if value is None:
                raise pynvml.NVMLError_NotSupported()
            return value

        def ecc(handle: object, error_type: int, counter: int) -> int:
            return supported(self._card(handle).ecc)[(error_type, counter)]

        def retired(handle: object, cause: int) -> list[int]:
            pages = supported(self._card(handle).retired_pages)
            return pages.get(cause, [])

        def threshold(handle: object, kind: int) -> int:
            assert kind == pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
            return supported(self._card(handle).slowdown_c)

        def register(handle: object, types: int, event_set: object) -> None:
            assert isinstance(handle, FakeHandle)
            if not self._card(handle).events_supported:
                raise pynvml.NVMLError_NotSupported()
            assert types & pynvml.nvmlEventTypeXidCriticalError
            self.registered.append(handle.index)

        def wait(event_set: object, timeout_ms: int) -> SimpleNamespace:
            self.wait_calls += 1
            try:
                index, xid = self.events.get(timeout=timeout_ms / 1000)
            except queue.Empty:
                raise pynvml.NVMLError_Timeout() from None
            return SimpleNamespace(
                device=FakeHandle(index),
                eventType=pynvml.nvmlEventTypeXidCriticalError,
                eventData=xid,
                gpuInstanceId=0xFFFFFFFF,
                computeInstanceId=0xFFFFFFFF,
            )

        replacements = {
            "nvmlDeviceGetTotalEccErrors": ecc,
            "nvmlDeviceGetRemappedRows": lambda h: supported(self._card(h).remapped_rows),
            "nvmlDeviceGetRetiredPagesPendingStatus": lambda h: supported(
                self._card(h).retired_pages_pending
            ),
            "nvmlDeviceGetRetiredPages": retired,
            "nvmlDeviceGetCurrentClocksEventReasons": lambda h: supported(
                self._card(h).clock_events
            ),
            "nvmlDeviceGetCurrentClocksThrottleReasons": lambda h: supported(
                self._card(h).clock_events
            ),
            "nvmlDeviceGetTemperatureThreshold": threshold,
            "nvmlDeviceGetEnforcedPowerLimit": lambda h: supported(self._card(h).power_limit_mw),
            "nvmlEventSetCreate": lambda: SimpleNamespace(kind="event set"),
            "nvmlDeviceRegisterEvents": register,
            "nvmlEventSetWait_v2": wait,
            "nvmlEventSetFree": lambda event_set: None,
        }
        for name, replacement in replacements.items():
            assert hasattr(pynvml, name), f"pynvml has no {name}; the fake is out of date"
            monkeypatch.setattr(pynvml, name, replacement)
