"""Reads of the GPU inventory."""

from __future__ import annotations

from typing import Any

from devices.detection.health import NO_HEALTH
from devices.hosts import host_state
from devices.maintenance import gpu_maintenance_states
from devices.models import LOCAL_HOST_NAME, GpuDevice
from devices.runtime import same_gpu
from devices.services import Sample, gpu_sample


def gpu_inventory_readings(sample: Sample | None = None) -> dict[str, Any]:
    """The live sample in the design's ``{"gpus": [...]}`` shape, plus GPUs that disappeared
    and the other hosts' GPUs; each names its ``host`` and that host's ``host_state``.

    Readings only: who holds each GPU's memory beside the estimates (``memory_use``) and the
    over-estimate ``warnings`` are added a layer up (``gpuconfig.measured.gpu_inventory_view``).
    One query (absent GPUs); the readings come from the shared sample, never from NVML.
    """
    sample = sample or gpu_sample()
    live = {r.index for r in sample.readings}
    gpus = [
        {**r.as_api_dict(), "vram_free_mb": r.vram_free_mb, "present": True}
        for r in sample.readings
    ]
    # One query for all: the absent GPUs, the other hosts' GPUs (as their agents last
    # reported them) and every GPU's maintenance state.
    devices = list(GpuDevice.objects.select_related("host"))
    local_name = next((d.host.name for d in devices if d.host.is_local), LOCAL_HOST_NAME)
    for gpu in gpus:
        gpu["host"], gpu["host_state"] = local_name, "online"
    for device in devices:
        if device.host.is_local and (device.present or device.gpu_index in live):
            continue
        state = host_state(device.host)
        used = (
            None
            if device.vram_total_mb is None or device.vram_available_mb is None
            else device.vram_total_mb - device.vram_available_mb
        )
        gpus.append(
            {
                "index": device.gpu_index,
                "uuid": device.uuid,
                "name": device.name,
                "vram_total_mb": device.vram_total_mb,
                "vram_used_mb": None if device.host.is_local else used,
                "compute_capability": device.compute_capability or None,
                "utilization_percent": None,
                "temperature_c": None,
                "power_w": None,
                "vram_reserved_mb": device.vram_reserved_mb,
                "vendor": device.vendor,
                "device_index": device.vendor_index,
                "render_node": device.render_node or None,
                "pci_bus": None,
                "integrated": device.integrated,
                "vram_free_mb": None if device.host.is_local else device.vram_available_mb,
                "present": device.present and state.label != "revoked",
                "host": device.host.name,
                # Another host's GPU reads as its agent last reported it; offline: since when.
                "host_state": state.label,
            }
        )
    gpus.sort(key=lambda g: g["index"])
    _add_health_and_maintenance(gpus, sample, devices)
    return {
        "gpus": gpus,
        "source": sample.source,
        "sampled_at": sample.taken_at,
        "age_seconds": sample.age_seconds(),
        "message": sample.message,
        "error": sample.error or None,
    }


def _add_health_and_maintenance(
    gpus: list[dict[str, Any]], sample: Sample, devices: list[GpuDevice]
) -> None:
    """Each GPU's health verdict (from the sample) and maintenance state (its row)."""
    states = gpu_maintenance_states(devices)
    for gpu in gpus:
        health = sample.health.get(gpu["uuid"]) if gpu["present"] else None
        gpu["health"] = (health or NO_HEALTH).as_api_dict()
        state = states.get(gpu["index"])
        gpu["maintenance"] = (
            state.as_api_dict()
            if state is not None
            else {
                "active": False,
                "reason": "",
                "by": "",
                "since": None,
                "automatic": False,
                "draining": False,
            }
        )


def gpu_identity_problem(gpu_index: int, gpu_uuid: str) -> str | None:
    """Why host GPU ``gpu_index`` is not the GPU ``gpu_uuid`` names now, or None.

    CDI hands a container its GPU by host index, but the identity that was planned (and that
    ``devices.runtime.get_target_gpu`` looks for inside the container) is the UUID: after
    re-cabling or a GPU swap the index can name another card. Read from the shared sample; a
    GPU the sample does not show, or an assignment saved without a UUID, is not judged here.
    """
    if not gpu_uuid:
        return None
    reading = next((r for r in gpu_sample().readings if r.index == gpu_index), None)
    if reading is None or same_gpu(reading.uuid, gpu_uuid):
        return None
    return (
        f"GPU {gpu_index} is now {reading.uuid}, not {gpu_uuid} that the configuration was "
        "saved for: re-scan the GPUs and save again"
    )
