"""Measured VRAM as facts: who holds each GPU's memory, and what the planner may hand out.

The shared sample (``devices.services.gpu_sample``) already carries every GPU process traced
to its container; this module only reads it, so nothing here calls NVML or podman per
request. Comparing these facts with the compose file's estimates and the applied
configuration (over-estimate warnings, suggested estimates) happens a layer up, in
``gpuconfig.measured``.

Units: NVML's and nvidia-smi's MiB are the "MB" of the whole inventory (``vram_total_mb`` of
an A5500 is 24564).

Capacity for planning is **total - the driver's reserve - the configured safety reserve**:
:func:`planning_capacity_mb` is where the driver's reserve comes off, for the planner's view
of every GPU (``gpuconfig.selectors.planning_gpus``); the safety reserve (System setting
``vram_reserve_mb``) is then kept free where budgets are sized (``gpuconfig.validation``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from devices.attribution import AttributedProcess, Owner
from devices.services import Sample, held_mb_by_service


def planning_capacity_mb(total_mb: int | None, driver_reserved_mb: int | None) -> int:
    """What the planner may hand out on a GPU before the safety reserve: total - driver reserve.

    The driver's reserve (480 MiB on an H100) is memory no process can allocate, so planning
    with the raw total would promise memory that does not exist.
    """
    return max(0, (total_mb or 0) - (driver_reserved_mb or 0))


@dataclass(frozen=True)
class GpuMemoryHolders:
    """Who holds the memory of one GPU, as the last sample measured it (no estimates here).

    ``services``: managed service -> MB its processes hold on this GPU; ``outside_processes``
    (pid, used_mb, owner) hold memory for no managed service; ``unattributed_processes``
    (pid, used_mb, reason) could not be traced to a container.
    """

    measured: bool
    note: str
    services: Mapping[str, int] = field(default_factory=dict)
    outside_processes: tuple[dict[str, Any], ...] = ()
    unattributed_processes: tuple[dict[str, Any], ...] = ()


def not_measured_note(sample: Sample) -> str:
    """Why the sample has no per-process memory at all ("" when it has)."""
    if sample.processes is not None:
        return ""
    if sample.error:
        return "Not measured: GPU detection failed."
    if sample.process_note:
        return f"Not measured: {sample.process_note}"
    return "Not measured: this source reports no processes (simulated GPUs)."


def gpu_memory_holders(
    sample: Sample, *, project: str, managed: Collection[str]
) -> dict[str, GpuMemoryHolders]:
    """Per GPU UUID: the managed services' MB, use outside them, and what could not be traced.

    ``managed`` names the compose services of ``project`` that GPU Config manages; a
    container of another project, or of a service not managed, is use outside GPU Config.
    """
    by_uuid = {r.uuid: r for r in sample.readings}
    if sample.processes is None:
        note = not_measured_note(sample)
        return {uuid: GpuMemoryHolders(measured=False, note=note) for uuid in by_uuid}
    per_gpu: dict[str, list[AttributedProcess]] = {uuid: [] for uuid in by_uuid}
    for item in sample.processes:
        per_gpu.setdefault(item.process.gpu_uuid, []).append(item)
    held = held_mb_by_service(sample.processes, project)
    result: dict[str, GpuMemoryHolders] = {}
    for uuid, items in per_gpu.items():
        if uuid in sample.unmeasured_uuids:
            result[uuid] = GpuMemoryHolders(
                measured=False, note=f"Not measured: {sample.process_note}"
            )
            continue
        outside, unattributed = _outside_and_unattributed(items, project, managed)
        note = ""
        if unattributed:
            note = (
                f"Attribution unavailable for {len(unattributed)} process(es): "
                f"{unattributed[0]['reason']}"
            )
        result[uuid] = GpuMemoryHolders(
            measured=True,
            note=note,
            services={
                name: per_uuid[uuid]
                for name, per_uuid in held.items()
                if name in managed and uuid in per_uuid
            },
            outside_processes=tuple(outside),
            unattributed_processes=tuple(unattributed),
        )
    return result


def _outside_and_unattributed(
    items: list[AttributedProcess], project: str, managed: Collection[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One GPU's processes held for no managed service, and those not traced at all."""
    outside: list[dict[str, Any]] = []
    unattributed: list[dict[str, Any]] = []
    for item in items:
        used = item.process.used_mb
        labels = item.container
        if item.owner is Owner.UNAVAILABLE:
            unattributed.append({"pid": item.pid, "used_mb": used, "reason": item.reason})
        elif item.owner is Owner.HOST:
            outside.append({"pid": item.pid, "used_mb": used, "owner": "host process"})
        elif labels is not None and not (labels.project == project and labels.service in managed):
            where = (
                f"service {labels.service} of project {labels.project}"
                if labels.service
                else "no compose service"
            )
            owner = f"container {labels.name} ({where})"
            outside.append({"pid": item.pid, "used_mb": used, "owner": owner})
    return outside, unattributed
