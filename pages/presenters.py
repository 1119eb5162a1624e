"""View-models of the Settings pages: the table's rows, the strategy choices, the GPU cards
and what each GPU will hold, ready for the templates (no form parsing here: pages/forms.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from gpuconfig.changes import ServiceChange
from gpuconfig.domain import (
    MIB_PER_GIB,
    RECOMMENDED_STRATEGY,
    STRATEGY_DESCRIPTIONS,
    STRATEGY_LABELS,
    Gpu,
    PlanWarning,
    Service,
    StrategyName,
    WarningCode,
    defined_on,
    format_vram,
)
from gpuconfig.headroom import GpuHeadroom, headroom, outside_mb_by_index
from gpuconfig.services import Draft
from pages.forms import OFF, RefusedFields
from pages.hosts import GpuPlaces, gpu_host, gpu_label
from pages.measured_vram import gpu_card_memory

# --- what the page renders -----------------------------------------------------------------


@dataclass(frozen=True)
class StrategyOption:
    value: str
    label: str
    description: str
    recommended: bool
    checked: bool


def strategy_options(
    selected: StrategyName, recommended: StrategyName = RECOMMENDED_STRATEGY
) -> list[StrategyOption]:
    """The strategy radio buttons; ``recommended`` from selectors.recommended_strategy."""
    return [
        StrategyOption(
            value=s.value,
            label=STRATEGY_LABELS[s],
            description=STRATEGY_DESCRIPTIONS[s],
            recommended=s == recommended,
            checked=s == selected,
        )
        for s in StrategyName
    ]


@dataclass(frozen=True)
class GpuOption:
    value: str
    label: str
    selected: bool


@dataclass(frozen=True)
class AssignmentRow:
    """One service in the assignments table, ready to render."""

    service: str
    model: str
    estimate: str
    role: str
    options: list[GpuOption]
    budget_adjustable: bool
    budget_value: str
    budget_auto: str
    auto_adjusted: bool
    warnings: list[PlanWarning]
    change_text: str  # "GPU 0 → GPU 1" when the row differs from the saved version
    enabled: bool
    host: str = ""  # the host of the GPU it is assigned to ("" for none)
    # Why the GPU or budget field was refused ("" when it was not); the field then shows
    # what was typed (budget_value) and is marked invalid.
    gpu_error: str = ""
    budget_error: str = ""

    @property
    def errors(self) -> list[str]:
        return [e for e in (self.gpu_error, self.budget_error) if e]


def change_detail(change: ServiceChange, places: GpuPlaces | None = None) -> str:
    """What changes for one service, without its name: "GPU 0 → GPU 1; budget 6.8 → 3.5 GiB".

    ``places``: the remote hosts' GPUs, which it then names by their host ("GPU 0 →
    gpu-box-2 / GPU 1"); without them a GPU reads "GPU <index>"."""
    if places:
        change = replace(change, gpu_labels={i: gpu_label(i, places) for i in places})
    before, after = change.before, change.after
    if not before.enabled and before.gpu_index is None and after.enabled:
        # Nothing saved for it yet: say where it goes, not "enabled; unassigned → GPU 0".
        where = "no GPU" if after.gpu_index is None else change.gpu_name(after.gpu_index)
        budget = (
            f", budget {after.vram_budget_gb:g} GiB" if after.vram_budget_gb is not None else ""
        )
        return f"new: {where}{budget}"
    return change.describe().removeprefix(f"{change.service}: ")


def described(
    changes: Sequence[ServiceChange], places: GpuPlaces | None = None
) -> list[dict[str, str]]:
    return [{"service": c.service, "text": change_detail(c, places)} for c in changes]


def short_gpu_name(name: str) -> str:
    return name.removeprefix("NVIDIA ").strip() or name


def _gpu_label(gpu: Gpu, places: GpuPlaces) -> str:
    label = (
        f"{gpu_label(gpu.index, places)} · {short_gpu_name(gpu.name)} "
        f"({format_vram(gpu.vram_total_mb)})"
    )
    return label if gpu.present else f"{label}, not detected"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _offered(service: Service, gpus: Sequence[Gpu], *, keep: int | None) -> list[Gpu]:
    """The GPUs a row offers: those of the hosts that define the service (several hosts:
    a service cannot run where its compose file is not), and the one it is set to whatever
    its host. With 50 hosts of 8 GPUs, 400 options per row made the page take seconds."""
    return [gpu for gpu in gpus if defined_on(service, gpu) or gpu.index == keep]


def assignment_rows(
    draft: Draft,
    *,
    refused: RefusedFields | None = None,
    places: GpuPlaces | None = None,
    local_host: str = "",
) -> list[AssignmentRow]:
    """The table: one row per registry service with its GPU choices, budget and warnings.

    ``refused``: the fields the last post could not use, by form field name: each is marked
    with its message, and a budget field shows back what was typed in it. ``places``: the
    remote hosts' GPUs (``pages.hosts.gpu_places``), named with their host; ``local_host``
    names the host of every other GPU.
    """
    places = places or {}
    errors = refused.errors if refused else {}
    typed = refused.typed if refused else {}
    manual = draft.strategy == StrategyName.MANUAL
    # Beside each row, what differs from the saved version (nothing to compare before a save).
    changes = {c.service: c for c in draft.changes} if draft.saved_version else {}
    warnings_by_service: dict[str, list[PlanWarning]] = {}
    for warning in draft.warnings:
        if warning.service:
            warnings_by_service.setdefault(warning.service, []).append(warning)
    rows = []
    for request in draft.requests:
        service = request.service
        entry = draft.configuration.by_service[service.name]
        gpu_now = entry.gpu_index
        pin = request.pinned_gpu
        options: list[GpuOption] = []
        if manual:
            chosen = pin if pin is not None else gpu_now
            if chosen is None and request.enabled:
                options.append(GpuOption("", "Choose a GPU", True))
            for gpu in _offered(service, draft.gpus, keep=chosen):
                options.append(
                    GpuOption(
                        str(gpu.index),
                        _gpu_label(gpu, places),
                        request.enabled and chosen == gpu.index,
                    )
                )
        else:
            auto_label = (
                "Auto"
                if gpu_now is None or pin is not None
                else f"Auto ({gpu_label(gpu_now, places)})"
            )
            options.append(GpuOption("", auto_label, request.enabled and pin is None))
            for gpu in _offered(service, draft.gpus, keep=pin):
                options.append(
                    GpuOption(
                        str(gpu.index),
                        _gpu_label(gpu, places),
                        request.enabled and pin == gpu.index,
                    )
                )
        options.append(GpuOption(OFF, "Off (no GPU)", not request.enabled))
        adjustable = service.budget_env is not None
        override = request.budget_override_gb
        effective = entry.vram_budget_gb
        if effective is None and adjustable:
            effective = round(service.vram_estimate_mb / MIB_PER_GIB, 2)
        budget_name = f"budget-{service.name}"
        shown = _number(override if override is not None else effective)
        rows.append(
            AssignmentRow(
                service=service.name,
                model=service.model,
                estimate=format_vram(service.vram_estimate_mb),
                role=service.role,
                options=options,
                budget_adjustable=adjustable,
                budget_value=typed.get(budget_name, shown),
                budget_auto="" if override is not None else _number(effective),
                auto_adjusted=entry.budget_auto_adjusted,
                warnings=warnings_by_service.get(service.name, []),
                change_text=change_detail(changes[service.name], places)
                if service.name in changes
                else "",
                enabled=request.enabled,
                host=gpu_host(gpu_now if request.enabled else None, places, local_host),
                gpu_error=errors.get(f"gpu-{service.name}", ""),
                budget_error=errors.get(budget_name, ""),
            )
        )
    return rows


@dataclass(frozen=True)
class PlannedGpu:
    index: int
    label: str  # "GPU 1", or "gpu-box-2 / GPU 1" on a remote host
    name: str
    capacity: str
    planned: str
    percent: int
    over: bool
    present: bool
    services: tuple[str, ...] = ()  # what the GPU will hold under this plan
    free: str = ""  # headroom: VRAM still free for new services under this plan


def planned_per_gpu(draft: Draft, places: GpuPlaces | None = None) -> list[PlannedGpu]:
    """VRAM the managed services would take on each GPU after the change."""
    places = places or {}
    planned = draft.evaluation.planned_vram_mb if draft.evaluation else {}
    room = headroom(draft.gpus, planned, outside_mb_by_index(draft.gpus, draft.registry.names()))
    free = {g.index: g for g in room.gpus}
    out = []
    for gpu in draft.gpus:
        mb = planned.get(gpu.index, 0)
        total = gpu.vram_total_mb or 0
        out.append(
            PlannedGpu(
                index=gpu.index,
                label=gpu_label(gpu.index, places),
                name=short_gpu_name(gpu.name),
                capacity=format_vram(total) if total else "unknown size",
                planned=format_vram(mb),
                percent=min(100, round(100 * mb / total)) if total else 0,
                over=bool(total) and mb > total,
                present=gpu.present,
                services=tuple(
                    entry.service
                    for entry in draft.configuration.assignments
                    if entry.enabled and entry.gpu_index == gpu.index
                ),
                free=free_text(free[gpu.index]) if gpu.present else "",
            )
        )
    return out


def headroom_line(draft: Draft) -> str:
    """Beside the planned VRAM: the largest service that could still be added without moving
    anything, and how much of the free VRAM is split so that no one service can use it."""
    planned = draft.evaluation.planned_vram_mb if draft.evaluation else {}
    room = headroom(draft.gpus, planned, outside_mb_by_index(draft.gpus, draft.registry.names()))
    largest = room.largest_addable_mb
    split = room.total_free_mb - largest
    line = f"Largest service that could be added without moving anything: {format_vram(largest)}"
    if split > 0:
        line += f" ({format_vram(split)} more is free, but split over other GPUs)"
    return line + "."


def free_text(room: GpuHeadroom) -> str:
    """'Free for new services: 4.2 GiB' (measured use outside GPU Config counted), or why 0."""
    if room.cordoned:
        return "Free for new services: none (in maintenance)"
    unmeasured = "" if room.outside_mb is not None else " (use outside GPU Config not measured)"
    return f"Free for new services: {format_vram(room.free_mb)}{unmeasured}"


def warning_note(warning: PlanWarning) -> str:
    """The design's follow-up sentence for an auto-adjusted budget."""
    return "Some models may not load." if warning.code == WarningCode.BUDGET_ADJUSTED else ""


def maintenance_text(maintenance: dict[str, Any] | None) -> str:
    """'In maintenance since 2026-12-03 08:40 UTC, set by admin: new fan. It takes no new
    services; those on it keep running until it is drained.' ('' when not in maintenance)."""
    if not maintenance or not maintenance.get("active"):
        return ""
    since = maintenance.get("since")
    when = f" since {since:%Y-%m-%d %H:%M} UTC" if since else ""
    return (
        f"In maintenance{when}, set by {maintenance['by']}: {maintenance['reason']} "
        "It takes no new services; those on it keep running until it is drained."
    )


def gpu_cards(gpus: list[dict[str, Any]], places: GpuPlaces | None = None) -> list[dict[str, Any]]:
    """The GPU cards from the shared sample's readings (never NVML per request)."""
    places = places or {}
    cards = []
    for gpu in gpus:
        total, used = gpu["vram_total_mb"], gpu["vram_used_mb"]
        known = total is not None and used is not None and total > 0
        cards.append(
            {
                **gpu,
                "label": gpu_label(gpu["index"], places),
                "capacity": format_vram(total) if total else "unknown size",
                "used_text": format_vram(used).removesuffix(" GiB") if used is not None else "?",
                "total_text": format_vram(total) if total else "?",
                "percent": min(100, round(100 * used / total)) if known else 0,
                "known": known,
                "memory": gpu_card_memory(gpu),  # measured use per service, outside use
                "maintenance_text": maintenance_text(gpu.get("maintenance")),
            }
        )
    return cards
