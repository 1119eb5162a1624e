"""Reads of the GPU inventory."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from devices.models import GpuDevice
from devices.services import gpu_sample


def gpu_device_list() -> QuerySet[GpuDevice]:
    return GpuDevice.objects.order_by("gpu_index")


def gpu_inventory_view() -> dict[str, Any]:
    """The live sample in the design's ``{"gpus": [...]}`` shape, plus GPUs that disappeared.

    One query (the absent GPUs); the readings come from the shared sample, never from NVML.
    """
    sample = gpu_sample()
    live = {r.index for r in sample.readings}
    gpus = [{**r.as_api_dict(), "present": True} for r in sample.readings]
    for device in GpuDevice.objects.filter(present=False).exclude(gpu_index__in=live):
        gpus.append(
            {
                "index": device.gpu_index,
                "uuid": device.uuid,
                "name": device.name,
                "vram_total_mb": device.vram_total_mb,
                "vram_used_mb": None,
                "compute_capability": device.compute_capability or None,
                "utilization_percent": None,
                "temperature_c": None,
                "power_w": None,
                "present": False,
            }
        )
    gpus.sort(key=lambda g: g["index"])
    return {
        "gpus": gpus,
        "source": sample.source,
        "sampled_at": sample.taken_at,
        "age_seconds": sample.age_seconds(),
        "message": sample.message,
        "error": sample.error or None,
    }
