"""Headroom (the design's fragmentation monitoring): per GPU the VRAM still free for new
services, and for the whole system the largest service that could still be added without
moving anything.

Free for new services = capacity for planning (total minus the driver's reserve) minus what
the plan holds there minus what processes outside GPU Config hold now (measured). VRAM that
is free in total but split over several GPUs shows as a total above the largest addable
service. A GPU in maintenance takes no new services: its headroom is 0.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from devices.services import Sample, gpu_sample
from devices.vram import gpu_memory_holders
from gpuconfig.domain import Gpu
from gpuconfig.drafts import gpu_config_draft


@dataclass(frozen=True)
class GpuHeadroom:
    index: int
    capacity_mb: int
    planned_mb: int
    outside_mb: int | None  # None: not measured (simulated GPUs, a failed process query)
    free_mb: int  # for new services; 0 on a GPU in maintenance or one not present
    cordoned: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "capacity_mb": self.capacity_mb,
            "planned_mb": self.planned_mb,
            "outside_gpu_config_mb": self.outside_mb,
            "free_for_new_services_mb": self.free_mb,
            "in_maintenance": self.cordoned,
        }


@dataclass(frozen=True)
class Headroom:
    gpus: tuple[GpuHeadroom, ...]

    @property
    def largest_addable_mb(self) -> int:
        """The largest service that fits somewhere without moving anything."""
        return max((g.free_mb for g in self.gpus), default=0)

    @property
    def total_free_mb(self) -> int:
        return sum(g.free_mb for g in self.gpus)

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpus": [g.as_dict() for g in self.gpus],
            "largest_addable_mb": self.largest_addable_mb,
            "total_free_mb": self.total_free_mb,
            # Free in total but split over GPUs: what a new service cannot use in one piece.
            "fragmented_mb": self.total_free_mb - self.largest_addable_mb,
        }


def headroom(
    gpus: Sequence[Gpu], planned_mb: Mapping[int, int], outside_mb: Mapping[int, int | None]
) -> Headroom:
    """Pure: each GPU's free VRAM for new services."""
    out = []
    for gpu in gpus:
        planned = planned_mb.get(gpu.index, 0)
        outside = outside_mb.get(gpu.index)
        free = gpu.vram_total_mb - planned - (outside or 0)
        closed = gpu.cordoned or not gpu.present
        out.append(
            GpuHeadroom(
                gpu.index,
                gpu.vram_total_mb,
                planned,
                outside,
                0 if closed else max(0, free),
                gpu.cordoned,
            )
        )
    return Headroom(tuple(out))


def outside_mb_by_index(
    gpus: Sequence[Gpu], managed: Collection[str], sample: Sample | None = None
) -> dict[int, int | None]:
    """MB held now by processes of no managed service (outside GPU Config or not traced),
    per GPU index, from the shared sample (no NVML, no database)."""
    sample = sample or gpu_sample()
    holders = gpu_memory_holders(
        sample, project=settings.GPUCONFIG_COMPOSE_PROJECT, managed=managed
    )
    out: dict[int, int | None] = {}
    for gpu in gpus:
        held = holders.get(gpu.uuid)
        if held is None or not held.measured:
            out[gpu.index] = None
            continue
        processes = (*held.outside_processes, *held.unattributed_processes)
        out[gpu.index] = sum(p.get("used_mb") or 0 for p in processes)
    return out


def saved_headroom() -> Headroom:
    """Headroom under the saved configuration (as it is, not re-planned)."""
    draft = gpu_config_draft(replan=False)
    planned = draft.evaluation.planned_vram_mb if draft.evaluation else {}
    return headroom(draft.gpus, planned, outside_mb_by_index(draft.gpus, draft.registry.names()))
