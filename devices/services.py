"""Writes and live sampling for the GPU inventory."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from devices import detection
from devices.detection import Detection, DetectionError, GpuReading
from devices.models import GpuDevice

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One reading of every GPU, shared by all clients for about a second."""

    readings: tuple[GpuReading, ...]
    source: str
    taken_at: datetime
    taken_monotonic: float
    message: str = ""
    error: str = ""  # set when this reading failed and ``readings`` are the last good ones

    def age_seconds(self) -> float:
        return round(max(0.0, time.monotonic() - self.taken_monotonic), 3)


@dataclass
class _Sampler:
    lock: threading.Lock = field(default_factory=threading.Lock)
    current: Sample | None = None
    detections: int = 0  # how many times detection really ran (tests and the bench read it)


_sampler = _Sampler()


def _run_detection() -> Detection:
    _sampler.detections += 1
    return detection.detect(settings.GPUCONFIG_SIMULATED_GPUS)


def gpu_sample(*, max_age_s: float | None = None) -> Sample:
    """The current GPU readings, detecting again only when the shared sample is too old.

    One lock per process: concurrent pollers wait for the sampler instead of each calling
    NVML, so the driver is asked at most once per ``GPUCONFIG_SAMPLE_SECONDS`` per process.
    """
    max_age = settings.GPUCONFIG_SAMPLE_SECONDS if max_age_s is None else max_age_s
    current = _sampler.current
    if current is not None and time.monotonic() - current.taken_monotonic < max_age:
        return current
    with _sampler.lock:
        current = _sampler.current
        if current is not None and time.monotonic() - current.taken_monotonic < max_age:
            return current
        _sampler.current = _take_sample(current)
        return _sampler.current


def _take_sample(previous: Sample | None) -> Sample:
    now, mono = timezone.now(), time.monotonic()
    try:
        found = _run_detection()
    except DetectionError as exc:
        logger.warning("GPU detection failed, keeping the last good readings: %s", exc)
        last_good = previous.readings if previous is not None else _readings_from_inventory()
        source = previous.source if previous is not None else "inventory"
        return Sample(last_good, source, now, mono, error=str(exc))
    return Sample(found.gpus, found.source.value, now, mono, message=found.message)


def _readings_from_inventory() -> tuple[GpuReading, ...]:
    return tuple(
        GpuReading(
            index=d.gpu_index,
            uuid=d.uuid,
            name=d.name,
            vram_total_mb=d.vram_total_mb,
            vram_used_mb=(
                d.vram_total_mb - d.vram_available_mb
                if d.vram_total_mb is not None and d.vram_available_mb is not None
                else None
            ),
            compute_capability=d.compute_capability or None,
        )
        for d in GpuDevice.objects.filter(present=True)
    )


def reset_sampler() -> None:
    """Forget the shared sample (tests, and after a re-scan so pollers see it at once)."""
    with _sampler.lock:
        _sampler.current = None


@dataclass(frozen=True)
class RescanResult:
    sample: Sample
    added: list[int]
    updated: list[int]
    disappeared: list[int]


def gpu_inventory_rescan() -> RescanResult:
    """Detect now and upsert ``gpu_devices`` by index.

    GPUs no longer seen are marked absent, not deleted, so assignments that point at them can
    be flagged. A failed detection changes nothing and is reported in ``sample.error``.
    """
    reset_sampler()
    sample = gpu_sample(max_age_s=0)
    if sample.error:
        return RescanResult(sample, [], [], [])
    seen = {r.index: r for r in sample.readings}
    added: list[int] = []
    updated: list[int] = []
    with transaction.atomic():
        existing = {d.gpu_index: d for d in GpuDevice.objects.select_for_update()}
        for index, reading in seen.items():
            fields = {
                "uuid": reading.uuid,
                "name": reading.name,
                "vram_total_mb": reading.vram_total_mb,
                "vram_available_mb": (
                    reading.vram_total_mb - reading.vram_used_mb
                    if reading.vram_total_mb is not None and reading.vram_used_mb is not None
                    else None
                ),
                "compute_capability": reading.compute_capability or "",
                "present": True,
                "last_seen_at": sample.taken_at,
            }
            if index in existing:
                GpuDevice.objects.filter(pk=existing[index].pk).update(
                    **fields, updated_at=timezone.now()
                )
                updated.append(index)
            else:
                GpuDevice.objects.create(gpu_index=index, **fields)
                added.append(index)
        disappeared = sorted(i for i, d in existing.items() if i not in seen and d.present)
        if disappeared:
            GpuDevice.objects.filter(gpu_index__in=disappeared).update(
                present=False, updated_at=timezone.now()
            )
    for index in disappeared:
        logger.warning("GPU %s is no longer detected; marked as disappeared", index)
    return RescanResult(sample, sorted(added), sorted(updated), disappeared)
