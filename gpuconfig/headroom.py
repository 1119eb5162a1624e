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
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings

from devices.services import Sample, gpu_sample
from devices.vram import gpu_memory_holders
from gpuconfig.domain import Gpu, Plan, Service, ServiceRequest, StrategyName
from gpuconfig.drafts import gpu_config_draft
from gpuconfig.strategies import StrategyError, plan


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
class Replan:
    """The largest new service that fits once the others may move, and how many move."""

    largest_mb: int
    moves: int


@dataclass(frozen=True)
class Headroom:
    gpus: tuple[GpuHeadroom, ...]
    replan: Replan | None = None  # None: not asked, or no plan could be made

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
            "largest_after_replan_mb": None if self.replan is None else self.replan.largest_mb,
            "replan_moves": None if self.replan is None else self.replan.moves,
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


# A re-plan's answer is searched to this many MB (a handful of plans, not one per MB).
REPLAN_STEP_MB = 64
_PROBE = "(a new service)"


def largest_after_replan(
    room: Headroom,
    strategy: StrategyName,
    gpus: Sequence[Gpu],
    requests: Sequence[ServiceRequest],
    current: Mapping[str, int],
    *,
    reserve_mb: int,
    time_budget_ms: int,
) -> Replan | None:
    """Pure: the largest service a re-plan could still place, found by bisection between
    what fits without moving anything and all the free VRAM; the moves are the running
    services the fitting plan puts on another GPU. Use outside GPU Config is taken off
    each GPU's capacity. Manual plans nothing: the question is asked of VRAM-based."""
    by_index = {g.index: g for g in room.gpus}
    shrunk = tuple(
        replace(g, vram_total_mb=max(1, g.vram_total_mb - (by_index[g.index].outside_mb or 0)))
        if g.index in by_index
        else g
        for g in gpus
    )
    chosen = StrategyName.VRAM_BASED if strategy is StrategyName.MANUAL else strategy

    def fitting(size: int) -> Plan | None:
        probe = ServiceRequest(Service(_PROBE, "", size))
        try:
            found = plan(
                chosen,
                shrunk,
                (*requests, probe),
                reserve_mb=reserve_mb,
                current=current,
                time_budget_ms=time_budget_ms,
            )
        except StrategyError:
            return None
        return None if found.over_capacity else found

    low, high = room.largest_addable_mb, room.total_free_mb
    best = fitting(low) if low > 0 else None
    if best is None:
        return None
    while high - low > REPLAN_STEP_MB:
        middle = (low + high) // 2
        found = fitting(middle)
        if found is None:
            high = middle
        else:
            low, best = middle, found
    moves = sum(
        1
        for name, index in best.assignments.items()
        if name != _PROBE and name in current and current[name] != index
    )
    return Replan(low, moves)


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
    room = headroom(draft.gpus, planned, outside_mb_by_index(draft.gpus, draft.registry.names()))
    replan = largest_after_replan(
        room,
        draft.strategy,
        draft.gpus,
        draft.requests,
        draft.configuration.placements(),
        reserve_mb=draft.reserve_mb,
        time_budget_ms=settings.GPUCONFIG_PLANNER_TIME_BUDGET_MS,
    )
    return replace(room, replan=replan)
