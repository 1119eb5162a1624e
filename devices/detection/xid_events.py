"""Xid events through an NVML event set, waited on by a daemon thread of the sampling process.

An Xid is an event, not a counter: a GPU that fell off the bus (Xid 79) says so once. The
watcher registers every GPU for ``nvmlEventTypeXidCriticalError`` and waits on the set
with a short timeout in its own thread, so the sampler's readings never wait for it; the
sampler asks :meth:`XidWatcher.xids` for what it has seen. The watcher keeps its own
``nvmlInit`` (NVML counts them), so the scans' ``nvmlShutdown`` does not end its session.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final

import pynvml

logger = logging.getLogger(__name__)

# How long one nvmlEventSetWait blocks: the longest a stop request waits for the thread.
WAIT_TIMEOUT_MS: Final = 500
# Events kept per GPU: enough to show what happened, bounded so a storm cannot grow memory.
KEEP_PER_GPU: Final = 32


@dataclass(frozen=True)
class XidEvent:
    """One Xid seen on one GPU (``at``: Unix time when the watcher received it)."""

    gpu_uuid: str
    xid: int
    at: float


def _key(handle: object) -> Hashable:
    """A handle's identity: the device pointer for NVML's handles (each call returns a new
    ctypes object for the same device), the object itself for anything else."""
    try:
        return ("ptr", ctypes.cast(handle, ctypes.c_void_p).value)  # type: ignore[arg-type]
    except (TypeError, ctypes.ArgumentError):
        return ("obj", handle)


class XidWatcher:
    """Watches every GPU's Xid events in a daemon thread; :meth:`start` once per process."""

    def __init__(self, *, wait_timeout_ms: int = WAIT_TIMEOUT_MS) -> None:
        self._wait_timeout_ms = wait_timeout_ms
        self._lock = threading.Lock()
        self._events: dict[str, list[XidEvent]] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.note = ""  # why events are not (fully) watched, for the page and the logs
        self.watched_uuids: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, *, wait_ready_s: float = 2.0) -> None:
        """Start the thread and wait (briefly) until it has registered the GPUs."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="gpu-xid-events", daemon=True)
        self._thread.start()
        self._ready.wait(wait_ready_s)

    def stop(self, *, join_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(join_s)

    def xids(self, gpu_uuid: str) -> tuple[int, ...]:
        """The Xids seen on this GPU since the watcher started, oldest first."""
        with self._lock:
            return tuple(event.xid for event in self._events.get(gpu_uuid, ()))

    def events(self) -> tuple[XidEvent, ...]:
        with self._lock:
            return tuple(e for listed in self._events.values() for e in listed)

    def record(self, gpu_uuid: str, xid: int) -> None:
        with self._lock:
            listed = self._events.setdefault(gpu_uuid, [])
            listed.append(XidEvent(gpu_uuid, xid, time.time()))
            del listed[:-KEEP_PER_GPU]
        logger.warning("GPU %s reported Xid %s", gpu_uuid, xid)

    def _run(self) -> None:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            self.note = f"Xid events are not watched: NVML could not be initialised ({error})."
            self._ready.set()
            return
        try:
            event_set = pynvml.nvmlEventSetCreate()
            try:
                handles = self._register(event_set)
                self._ready.set()
                if handles:
                    self._wait_loop(event_set, handles)
            finally:
                with contextlib.suppress(pynvml.NVMLError):
                    pynvml.nvmlEventSetFree(event_set)
        except pynvml.NVMLError as error:
            self.note = f"Xid events are not watched: {error}."
            logger.warning("the Xid watcher stopped: %s", error)
        finally:
            self._ready.set()
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()

    def _register(self, event_set: object) -> dict[Hashable, str]:
        handles: dict[Hashable, str] = {}
        skipped: list[str] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
            try:
                pynvml.nvmlDeviceRegisterEvents(
                    handle, pynvml.nvmlEventTypeXidCriticalError, event_set
                )
            except pynvml.NVMLError as error:
                # A card without event support (NotSupported) is watched by no one: say so.
                skipped.append(f"GPU {index} ({error})")
                continue
            handles[_key(handle)] = uuid
        if skipped:
            self.note = f"Xid events are not watched on {', '.join(skipped)}."
        self.watched_uuids = tuple(handles.values())
        return handles

    def _wait_loop(self, event_set: object, handles: dict[Hashable, str]) -> None:
        while not self._stop.is_set():
            try:
                data = pynvml.nvmlEventSetWait_v2(event_set, self._wait_timeout_ms)
            except pynvml.NVMLError_Timeout:
                continue
            except pynvml.NVMLError as error:
                # GpuIsLost and friends: wait a little and go on; a lost GPU's scan reports it.
                logger.warning("waiting for Xid events failed: %s", error)
                self._stop.wait(self._wait_timeout_ms / 1000)
                continue
            if int(data.eventType) & pynvml.nvmlEventTypeXidCriticalError:
                uuid = handles.get(_key(data.device))
                if uuid is None and len(handles) == 1:
                    uuid = next(iter(handles.values()))
                if uuid is not None:
                    self.record(uuid, int(data.eventData))
