"""Measured VRAM beside the plan: what each managed service really holds against its estimate.

``devices.vram`` reports the facts (per GPU, the MiB each managed service's processes hold,
use outside GPU Config, processes that could not be traced); this module compares them with
the compose file's ``gpuconfig.vram_estimate_mb`` labels and the applied configuration: the
GPUs API's ``memory_use`` and over-estimate warnings, and the preview's warnings about moves
that a GPU's real free memory cannot hold. Nothing here calls NVML or podman per request.

Units: the labels are MiB, NVML's unit (docs/ui.md, "Units"), so they are compared with
its readings as they are; sentences print `format_vram`'s GiB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from devices.detection import GpuReading
from devices.selectors import gpu_inventory_readings
from devices.services import Sample, gpu_sample, held_mb_by_service
from devices.vram import gpu_memory_holders
from gpuconfig.domain import (
    Gpu,
    PlanWarning,
    ServiceRequest,
    WarningCode,
    budget_mib,
    format_vram,
)
from gpuconfig.registry import RegistryError, load_registry
from gpuconfig.selectors import latest_applied_version


@dataclass(frozen=True)
class ServiceUse:
    """One managed service on one GPU: measured MB beside its label's estimate."""

    service: str
    measured_mb: int
    estimate_mb: int | None
    over_estimate: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "measured_mb": self.measured_mb,
            "estimate_mb": self.estimate_mb,
            "over_estimate": self.over_estimate,
        }


@dataclass(frozen=True)
class GpuMemoryUse:
    """Who holds the memory of one GPU, as measured by the last sample, beside the estimates."""

    measured: bool
    note: str
    services: tuple[ServiceUse, ...] = ()
    outside_gpu_config_mb: int | None = None
    outside_processes: tuple[dict[str, Any], ...] = ()
    unattributed_mb: int | None = None
    unattributed_processes: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "measured": self.measured,
            "note": self.note,
            "services": [s.as_dict() for s in self.services],
            "outside_gpu_config_mb": self.outside_gpu_config_mb,
            "outside_processes": list(self.outside_processes),
            "unattributed_mb": self.unattributed_mb,
            "unattributed_processes": list(self.unattributed_processes),
        }


def is_over_estimate(measured_mb: int, estimate_mb: int | None, margin_percent: int) -> bool:
    """Whether a service holds more than its estimate plus the configured margin."""
    if estimate_mb is None:
        return False
    return measured_mb * 100 > estimate_mb * (100 + margin_percent)


def summarize_gpu_memory(
    sample: Sample,
    *,
    project: str,
    estimates: Mapping[str, int | None],
    applied: Mapping[str, int],
    margin_percent: int,
) -> dict[str, GpuMemoryUse]:
    """Per GPU UUID: managed services' measured MB beside their estimates, outside use, and
    what could not be traced.

    ``estimates`` names the managed services (their label estimate, None if unknown);
    ``applied`` (service -> GPU index of the applied configuration) adds services that should
    be on a GPU but hold nothing there, so "0 MiB of ~1.2 GiB" shows too.
    """
    index_of = {r.uuid: r.index for r in sample.readings}
    result: dict[str, GpuMemoryUse] = {}
    for uuid, holders in gpu_memory_holders(sample, project=project, managed=estimates).items():
        if not holders.measured:
            result[uuid] = GpuMemoryUse(measured=False, note=holders.note)
            continue
        services = dict(holders.services)
        for name, index in applied.items():
            if uuid in index_of and index == index_of[uuid] and name in estimates:
                services.setdefault(name, 0)
        result[uuid] = GpuMemoryUse(
            measured=True,
            note=holders.note,
            services=tuple(
                ServiceUse(
                    name,
                    mb,
                    estimates.get(name),
                    is_over_estimate(mb, estimates.get(name), margin_percent),
                )
                for name, mb in sorted(services.items())
            ),
            outside_gpu_config_mb=sum(p["used_mb"] or 0 for p in holders.outside_processes),
            outside_processes=holders.outside_processes,
            unattributed_mb=sum(p["used_mb"] or 0 for p in holders.unattributed_processes),
            unattributed_processes=holders.unattributed_processes,
        )
    return result


def over_estimate_warnings(
    uses: Mapping[str, GpuMemoryUse], gpus: Sequence[GpuReading], margin_percent: int
) -> list[PlanWarning]:
    """A warning per service holding more than its estimate plus the margin."""
    index_of = {r.uuid: r.index for r in gpus}
    warnings = []
    for uuid, use in uses.items():
        for s in use.services:
            if s.over_estimate and s.estimate_mb is not None:
                warnings.append(
                    PlanWarning(
                        WarningCode.SERVICE_OVER_ESTIMATE,
                        f"{s.service} holds {format_vram(s.measured_mb)} on GPU "
                        f"{index_of.get(uuid, '?')}, more than its estimate of "
                        f"{format_vram(s.estimate_mb)} (margin {margin_percent}%): raise its "
                        "gpuconfig.vram_estimate_mb label (see suggested estimates)",
                        s.service,
                        index_of.get(uuid),
                    )
                )
    return warnings


def real_free_move_warnings(
    *,
    gpus: Sequence[GpuReading],
    measured: Mapping[str, Mapping[str, int]],
    current: Mapping[str, int],
    planned: Mapping[str, int],
    demand: Mapping[str, int],
) -> list[PlanWarning]:
    """A warning per GPU whose real free memory cannot hold the services planned to move onto it.

    ``current``: where each service runs now (GPU index); ``planned``: where the plan puts it;
    ``demand``: MB each needs there; ``measured``: MB each holds now, per GPU UUID. The room on a
    target is its free memory now plus what the services leaving it hold now.
    """
    by_index = {r.index: r for r in gpus}
    uuid_of = {r.index: r.uuid for r in gpus}
    warnings = []
    for index, reading in sorted(by_index.items()):
        free = reading.vram_free_mb
        if free is None:
            continue
        incoming = sorted(
            name
            for name, target in planned.items()
            if target == index and current.get(name) is not None and current[name] != index
        )
        if not incoming:
            continue
        leaving = [
            name for name, now in current.items() if now == index and planned.get(name) != index
        ]
        freed = sum(measured.get(name, {}).get(uuid_of[index], 0) for name in leaving)
        need = sum(demand.get(name, 0) for name in incoming)
        room = free + freed
        if need > room:
            moving = ", ".join(f"{n} ({format_vram(demand.get(n, 0))})" for n in incoming)
            freed_text = (
                f", plus {format_vram(freed)} freed by services leaving it" if freed else ""
            )
            warnings.append(
                PlanWarning(
                    WarningCode.MOVE_EXCEEDS_REAL_FREE,
                    f"GPU {index} has {format_vram(free)} really free now (measured{freed_text}): "
                    f"not enough for {moving} moving there",
                    incoming[0] if len(incoming) == 1 else None,
                    index,
                )
            )
    return warnings


# --- Django-side gathering: the inputs above, from the sample, the compose file and the rows


def managed_estimates() -> dict[str, int | None]:
    """Managed service -> its label estimate (MB), from the compose file."""
    try:
        registry = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
    except RegistryError:
        return {}
    return {s.name: s.vram_estimate_mb for s in registry.services}


def applied_gpus() -> dict[str, int]:
    """Service -> GPU index in the configuration applied last (empty before the first Apply)."""
    version = latest_applied_version()
    if version is None:
        return {}
    placements = {}
    for name, entry in version.assignments.items():
        # "gpu_index" since the stored names were unified; "gpu" in versions saved before.
        index = entry.get("gpu_index", entry.get("gpu"))
        if entry.get("enabled", True) and index is not None:
            placements[name] = int(index)
    return placements


def margin_percent() -> int:
    return int(settings.GPUCONFIG_VRAM_OVER_ESTIMATE_MARGIN_PERCENT)


def gpu_memory_uses(sample: Sample | None = None) -> dict[str, GpuMemoryUse]:
    """:func:`summarize_gpu_memory` for the shared sample (no NVML, no podman).

    One query (the applied version), and none when processes are not measured: pages and
    polls on simulated GPUs cost what they did before.
    """
    sample = sample or gpu_sample()
    return summarize_gpu_memory(
        sample,
        project=settings.GPUCONFIG_COMPOSE_PROJECT,
        estimates=managed_estimates(),
        applied=applied_gpus() if sample.processes is not None else {},
        margin_percent=margin_percent(),
    )


def gpu_inventory_view() -> dict[str, Any]:
    """The GPUs API's body: the inventory's readings (``devices.selectors``), each GPU with its
    measured memory use beside the estimates (``memory_use``), and ``warnings`` listing the
    services over their estimate.

    One query (absent GPUs), plus the applied version when processes are measured; the
    readings and processes come from the shared sample, never from NVML or podman.
    """
    sample = gpu_sample()
    body = gpu_inventory_readings(sample)
    uses = gpu_memory_uses(sample)
    gone = GpuMemoryUse(measured=False, note="Not measured: the GPU is no longer detected.")
    elsewhere = GpuMemoryUse(
        measured=False, note="Not measured here: the GPU is on another host (its agent's report)."
    )
    for gpu in body["gpus"]:
        use = (uses.get(gpu["uuid"]) or elsewhere) if gpu["present"] else gone
        gpu["memory_use"] = use.as_dict()
    body["warnings"] = [
        w.as_dict() for w in over_estimate_warnings(uses, sample.readings, margin_percent())
    ]
    return body


def measured_vram_warnings(
    *,
    gpus: Sequence[Gpu],
    requests: Sequence[ServiceRequest],
    assignments: Mapping[str, int],
    budgets_gb: Mapping[str, float | None],
    applied: Mapping[str, int] | None,
) -> list[PlanWarning]:
    """The preview's measured-VRAM warnings: services over their estimate, and planned moves
    that the target GPU's real free memory cannot hold.

    Only where processes are really measured (NVML or nvidia-smi): without per-service
    readings the memory a leaving service frees is unknown, and the estimate-based warnings
    already cover the plan.
    """
    sample = gpu_sample()
    if sample.processes is None:
        return []
    uses = gpu_memory_uses(sample)
    warnings = over_estimate_warnings(uses, sample.readings, margin_percent())
    held = held_mb_by_service(sample.processes, settings.GPUCONFIG_COMPOSE_PROJECT)
    index_of = {r.uuid: r.index for r in sample.readings}
    # Where a service runs now: the applied configuration, else where it is measured.
    current: dict[str, int] = {}
    for name, per_gpu in held.items():
        most = max(per_gpu, key=per_gpu.__getitem__)
        if most in index_of:
            current[name] = index_of[most]
    current.update(applied or {})
    demand: dict[str, int] = {}
    for request in requests:
        name = request.service.name
        budget = budgets_gb.get(name)
        planned_mb = budget_mib(budget) if budget is not None else request.service.vram_estimate_mb
        # What it holds now is the better guess when it already exceeds the plan.
        demand[name] = max(planned_mb, sum(held.get(name, {}).values()))
    known = {g.index for g in gpus if g.present}
    return warnings + real_free_move_warnings(
        gpus=[r for r in sample.readings if r.index in known],
        measured=held,
        current=current,
        planned=dict(assignments),
        demand=demand,
    )
