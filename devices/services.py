"""Writes and live sampling for the GPU inventory."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from devices import detection
from devices.attribution import AttributedProcess, Owner, ProcessAttributor
from devices.detection import Detection, DetectionError, GpuReading, GpuVendor
from devices.detection.health import GpuHealth
from devices.gpu_health import cordon_critical, health_by_uuid
from devices.models import GpuDevice, ServiceVramPeak, local_host_pk

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
    # The processes holding GPU memory and whom they were traced to; None: not measured
    # (a simulated inventory, or the process query failed: ``process_note`` says why).
    processes: tuple[AttributedProcess, ...] | None = None
    process_note: str = ""
    unmeasured_uuids: tuple[str, ...] = ()
    # Each GPU's health verdict by UUID (devices.gpu_health): readings and Xid events judged.
    health: Mapping[str, GpuHealth] = field(default_factory=dict)

    def age_seconds(self) -> float:
        return round(max(0.0, time.monotonic() - self.taken_monotonic), 3)


@dataclass
class _Sampler:
    lock: threading.Lock = field(default_factory=threading.Lock)
    current: Sample | None = None
    detections: int = 0  # how many times detection really ran (tests and the bench read it)
    # Kept across samples: it caches what podman said about each container.
    attributor: ProcessAttributor = field(default_factory=ProcessAttributor)
    # Per service, the highest MB already stored in ServiceVramPeak (None: not loaded yet).
    peaks: dict[str, int] | None = None


_sampler = _Sampler()


def _run_detection() -> Detection:
    _sampler.detections += 1
    return detection.detect(settings.GPUCONFIG_SIMULATED_GPUS, with_processes=True)


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
        health = previous.health if previous is not None else {}
        return Sample(last_good, source, now, mono, error=str(exc), health=health)
    attributed = None if found.processes is None else _sampler.attributor.attribute(found.processes)
    sample = Sample(
        _with_last_seen(found, previous),
        found.source.value,
        now,
        mono,
        message=found.message,
        processes=attributed,
        process_note=found.process_note,
        unmeasured_uuids=found.unmeasured_uuids,
        health=health_by_uuid(found.gpus, found.source.value),
    )
    cordon_critical(sample.health)
    if attributed:
        try:
            _record_peaks(attributed)
        except DatabaseError as exc:
            # The peaks serve suggested estimates later; the readings must not wait for them.
            logger.warning("could not store measured VRAM peaks: %s", exc)
            _sampler.peaks = None
    return sample


def held_mb_by_service(
    processes: tuple[AttributedProcess, ...], project: str
) -> dict[str, dict[str, int]]:
    """MB held per compose service of ``project``, per GPU UUID (all its processes summed)."""
    out: dict[str, dict[str, int]] = {}
    for item in processes:
        labels = item.container
        if item.owner is not Owner.CONTAINER or labels is None or not labels.service:
            continue
        if labels.project != project or item.process.used_mb is None:
            continue
        per_gpu = out.setdefault(labels.service, {})
        per_gpu[item.process.gpu_uuid] = per_gpu.get(item.process.gpu_uuid, 0) + (
            item.process.used_mb
        )
    return out


def _record_peaks(processes: tuple[AttributedProcess, ...]) -> None:
    """Store a service's new peak; a sample that beats no peak writes nothing."""
    measured = held_mb_by_service(processes, settings.GPUCONFIG_COMPOSE_PROJECT)
    if not measured:
        return
    if _sampler.peaks is None:
        _sampler.peaks = dict(ServiceVramPeak.objects.values_list("service", "peak_mb"))
    for service, per_gpu in measured.items():
        total = sum(per_gpu.values())
        if total <= _sampler.peaks.get(service, -1):
            continue
        gpu_uuid = max(per_gpu, key=per_gpu.__getitem__)
        # Conditional update: another process (a second web worker) may have stored a higher
        # peak meanwhile, and a peak must never go down.
        updated = ServiceVramPeak.objects.filter(service=service, peak_mb__lt=total).update(
            peak_mb=total, gpu_uuid=gpu_uuid, measured_at=timezone.now()
        )
        if not updated:
            row, _ = ServiceVramPeak.objects.get_or_create(
                service=service, defaults={"peak_mb": total, "gpu_uuid": gpu_uuid}
            )
            total = max(total, row.peak_mb)  # another process stored a higher one
        _sampler.peaks[service] = total


def service_peaks_reset() -> int:
    """Forget every stored peak (a new model version makes old peaks meaningless)."""
    deleted, _ = ServiceVramPeak.objects.all().delete()
    _sampler.peaks = None
    return deleted


def _with_last_seen(found: Detection, previous: Sample | None) -> tuple[GpuReading, ...]:
    """The detected GPUs, plus the last good readings of a vendor whose source just failed
    (its GPUs are still there; only this reading of them is missing)."""
    if not found.failed_vendors:
        return found.gpus
    last_good = previous.readings if previous is not None else _readings_from_inventory()
    seen = {gpu.index for gpu in found.gpus}
    kept = [g for g in last_good if g.vendor in found.failed_vendors and g.index not in seen]
    return tuple(sorted((*found.gpus, *kept), key=lambda gpu: gpu.index))


def _readings_from_inventory() -> tuple[GpuReading, ...]:
    return tuple(
        GpuReading(
            index=d.gpu_index,
            vendor=GpuVendor(d.vendor),
            device_index=d.device_index,
            render_node=d.render_node or None,
            integrated=d.integrated,
            uuid=d.uuid,
            name=d.name,
            vram_total_mb=d.vram_total_mb,
            vram_used_mb=(
                d.vram_total_mb - (d.vram_reserved_mb or 0) - d.vram_available_mb
                if d.vram_total_mb is not None and d.vram_available_mb is not None
                else None
            ),
            compute_capability=d.compute_capability or None,
            vram_reserved_mb=d.vram_reserved_mb,
        )
        # This host's GPUs only: the other hosts' are their agents' reports, not readings here.
        for d in GpuDevice.objects.filter(present=True, host_id=local_host_pk())
    )


def reset_sampler() -> None:
    """Forget the shared sample (tests, and after a re-scan so pollers see it at once)."""
    with _sampler.lock:
        _sampler.current = None
        # What podman said about containers and the stored peaks may be stale too.
        _sampler.attributor = ProcessAttributor()
        _sampler.peaks = None


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
        # This host's rows only: another host's GPUs are not detected here, and marking them
        # disappeared would take them out of every plan until their agent reports again.
        existing = {
            d.gpu_index: d
            for d in GpuDevice.objects.select_for_update().filter(host_id=local_host_pk())
        }
        for index, reading in seen.items():
            fields = {
                "uuid": reading.uuid,
                "name": reading.name,
                "vram_total_mb": reading.vram_total_mb,
                # Free as a process could allocate it: the driver's reserve is not available.
                "vram_available_mb": reading.vram_free_mb,
                "vram_reserved_mb": reading.vram_reserved_mb,
                "compute_capability": reading.compute_capability or "",
                "vendor": reading.vendor.value,
                "device_index": reading.device_index,
                "render_node": reading.render_node or "",
                "integrated": reading.integrated,
                "present": True,
                "last_seen_at": sample.taken_at,
            }
            if index in existing:
                GpuDevice.objects.filter(pk=existing[index].pk).update(
                    **fields, updated_at=timezone.now()
                )
                updated.append(index)
            else:
                # An integrated GPU (a small VRAM carve-out) is listed but not planned until
                # the operator includes it; later re-scans keep the operator's choice.
                GpuDevice.objects.create(gpu_index=index, planned=not reading.integrated, **fields)
                added.append(index)
        disappeared = sorted(i for i, d in existing.items() if i not in seen and d.present)
        if disappeared:
            GpuDevice.objects.filter(gpu_index__in=disappeared).update(
                present=False, updated_at=timezone.now()
            )
    for index in disappeared:
        logger.warning("GPU %s is no longer detected; marked as disappeared", index)
    # A GPU first stored just now is judged now, not at the next sample.
    cordon_critical(sample.health)
    return RescanResult(sample, sorted(added), sorted(updated), disappeared)
