"""Measured VRAM: what each managed service really holds, beside what its label claims.

The shared sample (``devices.services.gpu_sample``) already carries every GPU process traced
to its container; this module only reads it, together with the compose file's estimates and
the applied assignments, so nothing here calls NVML or podman per request.

Units: NVML's and nvidia-smi's MiB are the "MB" of the whole inventory (``vram_total_mb`` of
an A5500 is 24564), and the ``gpuconfig.vram_estimate_mb`` labels are compared with them as
they are, the way the planner has always compared estimates with capacities.

Capacity for planning is **total - the driver's reserve - the configured safety reserve**:
:func:`planning_capacity_mb` is where the driver's reserve comes off, for the planner's view
of every GPU (``gpuconfig.selectors.planning_gpus``); the safety reserve (System setting
``vram_reserve_mb``) is then kept free where budgets are sized (``gpuconfig.validation``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from devices.attribution import AttributedProcess, Owner
from devices.detection import GpuReading
from devices.models import ServiceVramPeak
from devices.services import Sample, gpu_sample, measured_by_service
from gpuconfig.domain import (
    MB_PER_GB,
    Gpu,
    PlanWarning,
    ServiceRequest,
    WarningCode,
    format_gb,
)

# Suggested estimates are the measured peak rounded up to this many MB: a label of
# "8900" reads as a decision, "8802" as noise that the next run will beat.
SUGGESTION_STEP_MB = 100


def planning_capacity_mb(total_mb: int | None, driver_reserved_mb: int | None) -> int:
    """What the planner may hand out on a GPU before the safety reserve: total - driver reserve.

    The driver's reserve (480 MiB on an H100) is memory no process can allocate, so planning
    with the raw total would promise memory that does not exist.
    """
    return max(0, (total_mb or 0) - (driver_reserved_mb or 0))


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
    """Who holds the memory of one GPU, as measured by the last sample."""

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
    """Per GPU UUID: managed services' measured MB, outside use, and what could not be traced.

    ``estimates`` names the managed services (their label estimate, None if unknown);
    ``applied`` (service -> GPU index of the applied configuration) adds services that should
    be on a GPU but hold nothing there, so "0 MB of ~1.2 GB" shows too.
    """
    by_uuid = {r.uuid: r for r in sample.readings}
    if sample.processes is None:
        if sample.error:
            note = "Not measured: GPU detection failed."
        elif sample.process_note:
            note = f"Not measured: {sample.process_note}"
        else:
            note = "Not measured: this source reports no processes (simulated GPUs)."
        return {uuid: GpuMemoryUse(measured=False, note=note) for uuid in by_uuid}

    per_gpu: dict[str, list[AttributedProcess]] = {uuid: [] for uuid in by_uuid}
    for item in sample.processes:
        per_gpu.setdefault(item.process.gpu_uuid, []).append(item)
    measured = measured_by_service(sample.processes, project)

    result: dict[str, GpuMemoryUse] = {}
    for uuid, items in per_gpu.items():
        reading = by_uuid.get(uuid)
        if uuid in sample.unmeasured_uuids:
            result[uuid] = GpuMemoryUse(measured=False, note=f"Not measured: {sample.process_note}")
            continue
        services: dict[str, int] = {
            name: per_uuid[uuid]
            for name, per_uuid in measured.items()
            if name in estimates and uuid in per_uuid
        }
        if reading is not None:
            for name, index in applied.items():
                if index == reading.index and name in estimates:
                    services.setdefault(name, 0)
        outside: list[dict[str, Any]] = []
        unattributed: list[dict[str, Any]] = []
        for item in items:
            used = item.process.used_mb
            labels = item.container
            if item.owner is Owner.UNAVAILABLE:
                unattributed.append({"pid": item.pid, "used_mb": used, "reason": item.reason})
            elif item.owner is Owner.HOST:
                outside.append({"pid": item.pid, "used_mb": used, "owner": "host process"})
            elif labels is not None and not (
                labels.project == project and labels.service in estimates
            ):
                where = (
                    f"service {labels.service} of project {labels.project}"
                    if labels.service
                    else "no compose service"
                )
                owner = f"container {labels.name} ({where})"
                outside.append({"pid": item.pid, "used_mb": used, "owner": owner})
        note = ""
        if unattributed:
            note = (
                f"Attribution unavailable for {len(unattributed)} process(es): "
                f"{unattributed[0]['reason']}"
            )
        result[uuid] = GpuMemoryUse(
            measured=True,
            note=note,
            services=tuple(
                ServiceUse(
                    name,
                    mb,
                    estimates.get(name),
                    is_over_estimate(mb, estimates.get(name), margin_percent),
                )
                for name, mb in sorted(services.items())
            ),
            outside_gpu_config_mb=sum(p["used_mb"] or 0 for p in outside),
            outside_processes=tuple(outside),
            unattributed_mb=sum(p["used_mb"] or 0 for p in unattributed),
            unattributed_processes=tuple(unattributed),
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
                        f"{s.service} holds {format_gb(s.measured_mb)} on GPU "
                        f"{index_of.get(uuid, '?')}, more than its estimate of "
                        f"{format_gb(s.estimate_mb)} (margin {margin_percent}%): raise its "
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
            moving = ", ".join(f"{n} ({format_gb(demand.get(n, 0))})" for n in incoming)
            freed_text = f", plus {format_gb(freed)} freed by services leaving it" if freed else ""
            warnings.append(
                PlanWarning(
                    WarningCode.MOVE_EXCEEDS_REAL_FREE,
                    f"GPU {index} has {format_gb(free)} really free now (measured{freed_text}): "
                    f"not enough for {moving} moving there",
                    incoming[0] if len(incoming) == 1 else None,
                    index,
                )
            )
    return warnings


# --- Django-side gathering: the inputs above, from the sample, the compose file and the rows


def managed_estimates() -> dict[str, int | None]:
    """Managed service -> its label estimate (MB), from the compose file."""
    from gpuconfig.registry import RegistryError, load_registry

    try:
        registry = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
    except RegistryError:
        return {}
    return {s.name: s.vram_estimate_mb for s in registry.services}


def applied_gpus() -> dict[str, int]:
    """Service -> GPU index in the configuration applied last (empty before the first Apply)."""
    from gpuconfig.selectors import latest_applied_version

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
    measured = measured_by_service(sample.processes, settings.GPUCONFIG_COMPOSE_PROJECT)
    index_of = {r.uuid: r.index for r in sample.readings}
    # Where a service runs now: the applied configuration, else where it is measured.
    current: dict[str, int] = {}
    for name, per_gpu in measured.items():
        held = max(per_gpu, key=per_gpu.__getitem__)
        if held in index_of:
            current[name] = index_of[held]
    current.update(applied or {})
    demand: dict[str, int] = {}
    for request in requests:
        name = request.service.name
        budget = budgets_gb.get(name)
        planned_mb = (
            round(budget * MB_PER_GB) if budget is not None else request.service.vram_estimate_mb
        )
        # What it holds now is the better guess when it already exceeds the plan.
        demand[name] = max(planned_mb, sum(measured.get(name, {}).values()))
    known = {g.index for g in gpus if g.present}
    return warnings + real_free_move_warnings(
        gpus=[r for r in sample.readings if r.index in known],
        measured=measured,
        current=current,
        planned=dict(assignments),
        demand=demand,
    )


@dataclass(frozen=True)
class SuggestedEstimate:
    """What to put in a service's ``gpuconfig.vram_estimate_mb`` label, from its measured peak."""

    service: str
    estimate_mb: int | None
    peak_mb: int | None
    measured_now_mb: int | None
    suggested_mb: int | None

    @property
    def label_line(self) -> str:
        if self.suggested_mb is None:
            return ""
        return f'gpuconfig.vram_estimate_mb: "{self.suggested_mb}"'

    @property
    def changes_estimate(self) -> bool:
        return self.suggested_mb is not None and self.suggested_mb != self.estimate_mb

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "estimate_mb": self.estimate_mb,
            "peak_mb": self.peak_mb,
            "measured_now_mb": self.measured_now_mb,
            "suggested_mb": self.suggested_mb,
            "label_line": self.label_line,
            "changes_estimate": self.changes_estimate,
        }


def suggest(peak_mb: int | None) -> int | None:
    """The measured peak rounded up to a whole :data:`SUGGESTION_STEP_MB` (None: never measured)."""
    if peak_mb is None:
        return None
    return max(SUGGESTION_STEP_MB, math.ceil(peak_mb / SUGGESTION_STEP_MB) * SUGGESTION_STEP_MB)


def suggested_estimates(sample: Sample | None = None) -> list[SuggestedEstimate]:
    """Per managed service: its estimate, measured peak and current use, and the label to write.

    The peak is the highest total the sampler has stored (it samples while the page or the
    API is read); the current sample counts too, so a first call already suggests something.
    GPU Config never edits the compose file: the operator copies the label line.
    """
    sample = sample or gpu_sample()
    estimates = managed_estimates()
    stored = dict(ServiceVramPeak.objects.values_list("service", "peak_mb"))
    now: dict[str, int] = {}
    if sample.processes is not None:
        for name, per_gpu in measured_by_service(
            sample.processes, settings.GPUCONFIG_COMPOSE_PROJECT
        ).items():
            now[name] = sum(per_gpu.values())
    out = []
    for name, estimate in estimates.items():
        candidates = [v for v in (stored.get(name), now.get(name)) if v is not None]
        peak = max(candidates) if candidates else None
        out.append(
            SuggestedEstimate(
                service=name,
                estimate_mb=estimate,
                peak_mb=peak,
                measured_now_mb=now.get(name) if sample.processes is not None else None,
                suggested_mb=suggest(peak),
            )
        )
    return out
