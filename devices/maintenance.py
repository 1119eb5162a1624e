"""Maintenance (cordon): a GPU that takes no new services, set by staff or by a critical
health event, stored on its ``gpu_devices`` row so it survives restarts and re-scans.

Writes are conditional updates (the row's state is checked in the same statement), so two
staff members, or staff and the sampler, cannot overwrite each other's change unseen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from django.utils import timezone

from common.errors import Refusal
from devices.detection.health import GpuHealth
from devices.models import GpuDevice

logger = logging.getLogger(__name__)

MAX_REASON_CHARS: Final = 500
# Who is named when GPU Config itself cordons a GPU.
AUTOMATIC_BY: Final = "GPU Config (health check)"


class MaintenanceRefused(Refusal):
    """A maintenance request that cannot be carried out; nothing was changed."""

    status_code = 400


class GpuNotFound(Refusal):
    status_code = 404


@dataclass(frozen=True)
class Maintenance:
    """A GPU's maintenance state as the page, the API and the planner read it."""

    gpu_index: int
    uuid: str
    active: bool
    reason: str
    by: str
    since: datetime | None
    automatic: bool
    draining: bool = False

    def as_api_dict(self) -> dict[str, object]:
        return {
            "active": self.active,
            "reason": self.reason,
            "by": self.by,
            "since": self.since,
            "automatic": self.automatic,
            "draining": self.draining,
        }

    @property
    def sentence(self) -> str:
        """'In maintenance since 2026-12-03 08:40 UTC, set by admin: new fan.'"""
        if not self.active:
            return ""
        since = "" if self.since is None else f" since {self.since:%Y-%m-%d %H:%M} UTC"
        return f"In maintenance{since}, set by {self.by}: {self.reason}"


def _state(device: GpuDevice) -> Maintenance:
    return Maintenance(
        device.gpu_index,
        device.uuid,
        device.maintenance,
        device.maintenance_reason,
        device.maintenance_by,
        device.maintenance_since,
        device.maintenance_automatic,
        device.maintenance and device.maintenance_drain,
    )


def gpu_maintenance_states(devices: Iterable[GpuDevice] | None = None) -> dict[int, Maintenance]:
    """Every known GPU's maintenance state, by index (one query, none given ``devices``)."""
    rows = GpuDevice.objects.all() if devices is None else devices
    return {d.gpu_index: _state(d) for d in rows}


def cordoned_gpu_indexes() -> frozenset[int]:
    """The GPUs in maintenance: the planner gives them no new services."""
    return frozenset(GpuDevice.objects.filter(maintenance=True).values_list("gpu_index", flat=True))


def _device(gpu_index: int) -> GpuDevice:
    device = GpuDevice.objects.filter(gpu_index=gpu_index).first()
    if device is None:
        raise GpuNotFound(f"There is no GPU {gpu_index}: re-scan the GPUs or pick another one.")
    return device


def _clean_reason(reason: str) -> str:
    cleaned = " ".join(reason.split())
    if not cleaned:
        raise MaintenanceRefused("Give a reason for the maintenance (what is being done).")
    if len(cleaned) > MAX_REASON_CHARS:
        raise MaintenanceRefused(
            f"The reason is {len(cleaned)} characters long; keep it to {MAX_REASON_CHARS}."
        )
    return cleaned


def gpu_maintenance_start(*, gpu_index: int, reason: str, by: str) -> Maintenance:
    """Put a GPU in maintenance (staff). Refused without a reason, or when it already is."""
    cleaned = _clean_reason(reason)
    device = _device(gpu_index)
    updated = GpuDevice.objects.filter(pk=device.pk, maintenance=False).update(
        maintenance=True,
        maintenance_reason=cleaned,
        maintenance_by=by,
        maintenance_since=timezone.now(),
        maintenance_automatic=False,
        updated_at=timezone.now(),
    )
    if not updated:
        raise MaintenanceRefused(
            f"GPU {gpu_index} is already in maintenance ({device.maintenance_reason})."
        )
    logger.info("GPU %s put in maintenance by %s: %s", gpu_index, by, cleaned)
    return _state(GpuDevice.objects.get(pk=device.pk))


def gpu_maintenance_end(
    *, gpu_index: int, by: str, health: Mapping[str, GpuHealth] | None = None
) -> Maintenance:
    """Take a GPU out of maintenance (staff). ``health``: the verdicts now (the sample's);
    the GPU's critical reasons standing now are acknowledged, so that they do not cordon
    it again at once."""
    device = _device(gpu_index)
    verdict = (health or {}).get(device.uuid)
    standing_critical = () if verdict is None else verdict.cordon
    updated = GpuDevice.objects.filter(pk=device.pk, maintenance=True).update(
        maintenance=False,
        maintenance_reason="",
        maintenance_by="",
        maintenance_since=None,
        maintenance_automatic=False,
        maintenance_drain=False,
        health_acknowledged=" ".join(standing_critical),
        updated_at=timezone.now(),
    )
    if not updated:
        raise MaintenanceRefused(f"GPU {gpu_index} is not in maintenance.")
    logger.info("GPU %s taken out of maintenance by %s", gpu_index, by)
    return _state(GpuDevice.objects.get(pk=device.pk))


def gpu_maintenance_drain(*, gpu_index: int, by: str) -> Maintenance:
    """Drain a GPU in maintenance: from now on every plan moves its services elsewhere
    (the preview shows where; Save and Apply carry it out like any other change)."""
    device = _device(gpu_index)
    updated = GpuDevice.objects.filter(pk=device.pk, maintenance=True).update(
        maintenance_drain=True, updated_at=timezone.now()
    )
    if not updated:
        raise MaintenanceRefused(
            f"GPU {gpu_index} is not in maintenance: put it in maintenance before draining it."
        )
    logger.info("GPU %s drained by %s", gpu_index, by)
    return _state(GpuDevice.objects.get(pk=device.pk))


def gpu_cordon_on_critical(health_by_uuid: Mapping[str, GpuHealth]) -> set[str]:
    """Cordon every GPU whose health is critical for reasons not yet acknowledged.

    Returns the UUIDs judged (those with a row: a GPU not in the inventory yet is judged
    again after the re-scan stores it). The reason names the event ("Cordoned
    automatically: Xid 79 (GPU has fallen off the bus): ..."); a GPU already in maintenance
    keeps the reason it has.
    """
    critical = {uuid: h for uuid, h in health_by_uuid.items() if h.cordon}
    if not critical:
        return set()
    devices = list(GpuDevice.objects.filter(uuid__in=list(critical)))
    for device in devices:
        if device.maintenance:
            continue
        standing = " ".join(critical[device.uuid].cordon)
        if standing == device.health_acknowledged:
            continue
        reason = f"Cordoned automatically: {standing}"[:MAX_REASON_CHARS]
        updated = GpuDevice.objects.filter(pk=device.pk, maintenance=False).update(
            maintenance=True,
            maintenance_reason=reason,
            maintenance_by=AUTOMATIC_BY,
            maintenance_since=timezone.now(),
            maintenance_automatic=True,
            updated_at=timezone.now(),
        )
        if updated:
            logger.warning("GPU %s cordoned: %s", device.gpu_index, standing)
    return {device.uuid for device in devices}
