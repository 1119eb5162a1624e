"""Each sample's health verdicts, the Xid watcher of this process, and the automatic cordon.

Called by the sampler (``devices.services``) once per sample: it judges every GPU from its
readings and the Xid events this process's watcher saw, and cordons a GPU whose health
turned critical. The watcher is started by the first NVML sample of a process (so each
gunicorn worker, forked before any sample, gets its own thread).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.db import DatabaseError

from devices.detection import DetectionSource, GpuReading
from devices.detection.health import GpuHealth, assess
from devices.detection.xid_events import XidWatcher
from devices.maintenance import gpu_cordon_on_critical

logger = logging.getLogger(__name__)


@dataclass
class _HealthState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    watcher: XidWatcher | None = None
    watcher_pid: int = 0
    # Per GPU UUID, the critical reasons already handed to the cordon: a sample that finds
    # the same ones again asks the database nothing.
    handled: dict[str, str] = field(default_factory=dict)


_state = _HealthState()


def xid_watcher(source: str) -> XidWatcher | None:
    """This process's Xid watcher, started on the first NVML sample; None on other sources."""
    if source != DetectionSource.NVML.value:
        return None
    with _state.lock:
        if _state.watcher is None or _state.watcher_pid != os.getpid():
            _state.watcher = XidWatcher()
            _state.watcher_pid = os.getpid()
            _state.watcher.start()
        return _state.watcher


def health_by_uuid(readings: Iterable[GpuReading], source: str) -> dict[str, GpuHealth]:
    """Every GPU's verdict from its readings and the Xid events seen on it."""
    watcher = xid_watcher(source)
    return {
        reading.uuid: assess(
            reading.health,
            temperature_c=reading.temperature_c,
            power_w=reading.power_w,
            xids=() if watcher is None else watcher.xids(reading.uuid),
        )
        for reading in readings
    }


def cordon_critical(health: Mapping[str, GpuHealth]) -> None:
    """Cordon the GPUs that turned critical; the readings never wait for a failed write."""
    fresh = {
        uuid: h
        for uuid, h in health.items()
        if h.cordon and _state.handled.get(uuid) != " ".join(h.cordon)
    }
    if not fresh:
        return
    try:
        judged = gpu_cordon_on_critical(fresh)
    except DatabaseError as exc:
        logger.warning("could not cordon GPUs with critical health: %s", exc)
        return
    for uuid in judged:
        _state.handled[uuid] = " ".join(fresh[uuid].cordon)


def reset_health_state() -> None:
    """Forget what was handed to the cordon and stop the watcher (tests)."""
    with _state.lock:
        if _state.watcher is not None:
            _state.watcher.stop()
        _state.watcher = None
        _state.handled.clear()
