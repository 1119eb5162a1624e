"""Reads: the inventory as the planner sees it, the saved configuration, the versions."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import QuerySet

from devices.hosts import HostState, host_state
from devices.models import GpuDevice
from devices.services import gpu_sample
from devices.vram import planning_capacity_mb
from gpuconfig.domain import (
    RECOMMENDED_STRATEGY,
    Configuration,
    Gpu,
    Plan,
    ResolvedAssignment,
    ServiceRequest,
    StrategyName,
    demand_mb,
)
from gpuconfig.models import ConfigVersion, GpuConfiguration, SystemSetting
from gpuconfig.registry import RegistryError, load_registry
from gpuconfig.strategies import StrategyError, plan
from gpuconfig.system_settings import SystemConfig, system_config_from_rows

if TYPE_CHECKING:  # drafts reads through this module
    from gpuconfig.drafts import Draft


def system_config() -> SystemConfig:
    return system_config_from_rows(dict(SystemSetting.objects.values_list("key", "value")))


def planning_gpus() -> tuple[Gpu, ...]:
    """Every GPU the inventory knows (present or disappeared), with live used VRAM.

    The inventory decides which indexes exist; the shared live sample adds what is in use
    now. Before the first re-scan the live sample alone is used.

    ``vram_total_mb`` is what the planner may hand out: the GPU's total minus the driver's
    reserve (``devices.vram.planning_capacity_mb``); the validator then keeps the safety
    reserve free. Capacity for planning = total - driver reserve - safety reserve.
    """
    sample = gpu_sample()
    live = {r.index: r for r in sample.readings}
    devices = list(GpuDevice.objects.select_related("host").order_by("gpu_index"))
    if not devices:
        return tuple(
            Gpu(
                index=r.index,
                name=r.name,
                vram_total_mb=planning_capacity_mb(r.vram_total_mb, r.vram_reserved_mb),
                vram_used_mb=r.vram_used_mb,
                compute_capability=r.compute_capability,
                uuid=r.uuid,
                vendor=r.vendor.value,
                device_index=r.device_index,
                render_node=r.render_node or "",
            )
            for r in sample.readings
            # Before the first re-scan nobody could have included an integrated GPU yet.
            if not r.integrated
        )
    gpus = []
    # Several hosts: each GPU names its host. Another host's GPUs are read from its agent's
    # last report (not the local sample); an offline, joining or in-maintenance host's GPUs
    # take no new services (cordoned: those already there stay, shown "host offline", never
    # silently moved), and a revoked host's are gone.
    states = {d.host_id: host_state(d.host) for d in devices} if _several_hosts(devices) else None
    # An integrated GPU (a small VRAM carve-out) is planned only once the operator includes
    # it (GpuDevice.planned); left out, a pin to it reads as a GPU that is not there.
    for d in (d for d in devices if d.planned):
        if states is not None and not d.host.is_local:
            gpus.append(_remote_gpu(d, states[d.host_id]))
            continue
        reading = live.get(d.gpu_index)
        present = d.present and (reading is not None or bool(sample.error))
        gpus.append(
            Gpu(
                index=d.gpu_index,
                name=d.name,
                vram_total_mb=planning_capacity_mb(
                    d.vram_total_mb,
                    # The live reading when there is one; the last re-scan's otherwise.
                    reading.vram_reserved_mb
                    if reading is not None and reading.vram_reserved_mb is not None
                    else d.vram_reserved_mb,
                ),
                vram_used_mb=reading.vram_used_mb if reading else None,
                compute_capability=d.compute_capability or None,
                present=present,
                uuid=d.uuid,
                cordoned=d.maintenance,
                draining=d.maintenance and d.maintenance_drain,
                vendor=d.vendor,
                device_index=d.device_index,
                render_node=d.render_node,
                # The local host is "" to the planner (gpuconfig.fleet.LOCAL_HOST).
                host="",
            )
        )
    return tuple(gpus)


def _unavailable(name: str, state: HostState) -> str:
    """Why another host's GPU takes nothing now, for the warnings ("" when online)."""
    if state.plannable:
        return ""
    since = f" since {state.since:%Y-%m-%d %H:%M} UTC" if state.since else ""
    return f"host {name} is {state.label}{since}"


def _several_hosts(devices: Sequence[GpuDevice]) -> bool:
    return any(not d.host.is_local for d in devices)


def _remote_gpu(d: GpuDevice, state: HostState) -> Gpu:
    """Another host's GPU as its agent last reported it."""
    used = (
        None
        if d.vram_total_mb is None or d.vram_available_mb is None
        else d.vram_total_mb - d.vram_available_mb
    )
    return Gpu(
        index=d.gpu_index,
        name=d.name,
        vram_total_mb=planning_capacity_mb(d.vram_total_mb, d.vram_reserved_mb),
        vram_used_mb=used,
        compute_capability=d.compute_capability or None,
        present=d.present and state.label != "revoked",
        uuid=d.uuid,
        cordoned=d.maintenance or not state.plannable,
        unavailable=_unavailable(d.host.name, state),
        draining=d.maintenance and d.maintenance_drain,
        vendor=d.vendor,
        device_index=d.device_index,
        render_node=d.render_node,
        host=d.host.name,
    )


def saved_rows() -> dict[str, GpuConfiguration]:
    return {row.service_name: row for row in GpuConfiguration.objects.all()}


def latest_version() -> ConfigVersion | None:
    return ConfigVersion.objects.order_by("-number").first()


def latest_applied_version() -> ConfigVersion | None:
    # By when it was applied, not by number: a rollback applies an older configuration.
    return ConfigVersion.objects.filter(applied_at__isnull=False).order_by("-applied_at").first()


# Ties go to the design's recommendation first, then in this order.
RECOMMENDATION_ORDER = (
    RECOMMENDED_STRATEGY,
    *(
        s
        for s in (
            StrategyName.VRAM_BASED,
            StrategyName.LATENCY_OPTIMIZED,
            StrategyName.BALANCED,
            StrategyName.ISOLATION_FIRST,
        )
        if s != RECOMMENDED_STRATEGY
    ),
)


def recommended_strategy(
    gpus: Sequence[Gpu], requests: Sequence[ServiceRequest], *, reserve_mb: int
) -> StrategyName:
    """The automatic strategy whose own plan fits best on these GPUs.

    Each strategy plans from scratch (pins left out, as when the user switches to it); the
    fewest services over capacity wins, then the fewest MB over capacity, then the order of
    RECOMMENDATION_ORDER. Without a plan to compare (no GPU), the design's recommendation.
    ``reserve_mb`` is the reserve in force (the draft's): the plans are scored on the numbers
    the preview shows.
    """
    # Every form answer asks, and the live readings change every second: plans depend on the
    # sizes only, so the answer is kept per hardware, service list and reserve.
    return _recommended(
        tuple(replace(g, vram_used_mb=None) for g in gpus),
        tuple(replace(r, pinned_gpu=None) for r in requests),
        settings.GPUCONFIG_PLANNER_TIME_BUDGET_MS,
        reserve_mb,
    )


@functools.lru_cache(maxsize=32)
def _recommended(
    gpus: tuple[Gpu, ...], fresh: tuple[ServiceRequest, ...], time_budget_ms: int, reserve_mb: int
) -> StrategyName:
    best: tuple[tuple[int, int, int], StrategyName] | None = None
    for preference, strategy in enumerate(RECOMMENDATION_ORDER):
        try:
            result = plan(
                strategy, gpus, fresh, reserve_mb=reserve_mb, time_budget_ms=time_budget_ms
            )
        except StrategyError:
            continue
        score = (len(result.over_capacity), _overflow_mb(result, gpus, fresh), preference)
        if best is None or score < best[0]:
            best = (score, strategy)
    return best[1] if best else RECOMMENDED_STRATEGY


def _overflow_mb(result: Plan, gpus: Sequence[Gpu], requests: Sequence[ServiceRequest]) -> int:
    """MB planned beyond capacity, summed over the present GPUs."""
    load: dict[int, int] = {}
    by_name = {r.service.name: r for r in requests}
    for service, index in result.assignments.items():
        load[index] = load.get(index, 0) + demand_mb(by_name[service])
    return sum(max(0, load.get(g.index, 0) - g.vram_total_mb) for g in gpus if g.present)


def rollback_target() -> ConfigVersion | None:
    """The version a manual rollback would restore: the one applied before the latest applied.

    None when fewer than two versions were ever applied (nothing to go back to).
    """
    current = latest_applied_version()
    return None if current is None else applied_before(current)


def applied_before(version: ConfigVersion) -> ConfigVersion | None:
    """The version applied last before ``version`` was (by when, not by number: a rollback
    applies a copy of an older one), or None. The manual rollback's target, and what the
    page offers it for."""
    return (
        ConfigVersion.objects.filter(applied_at__isnull=False, applied_at__lt=version.applied_at)
        .order_by("-applied_at")
        .first()
    )


def draft_unsaved(draft: Draft, saved: ConfigVersion | None) -> bool:
    """Whether saving ``draft`` would store something other than ``saved`` (the newest saved
    version): its strategy, a change the draft lists, or anything stored that differs."""
    if saved is None or draft.changes:
        return True
    return not configuration_unchanged(saved, draft.strategy, draft.configuration)


def configuration_unchanged(
    version: ConfigVersion, strategy: StrategyName, configuration: Configuration
) -> bool:
    """Whether storing ``strategy`` and ``configuration`` would store what ``version`` holds.

    Both sides are compared in their stored form (``_stored_entry``), so a draft read back
    from the rows compares like with like with the version it was saved as. The page's
    "Unsaved changes" and the save's "nothing changed" both ask this.
    """
    if version.strategy != strategy.value:
        return False
    before = version_configuration(version).by_service
    after = configuration.by_service
    if before.keys() != after.keys():
        return False
    return all(_stored_entry(before[name]) == _stored_entry(after[name]) for name in after)


def _stored_entry(entry: ResolvedAssignment) -> dict[str, Any]:
    # A pin without a GPU (a service switched off under Manual) is stored as no pin: the
    # row keeps gpu_index NULL, and the draft read back from it is unpinned.
    return {**entry.to_json(), "pinned": entry.pinned and entry.gpu_index is not None}


def restored_from(version_number: int) -> int | None:
    """For a version a rollback saved (a copy of an older one), the number it copies."""
    return (
        ConfigVersion.objects.filter(number=version_number)
        .values_list("restored_from__number", flat=True)
        .first()
    )


def version_configuration(version: ConfigVersion) -> Configuration:
    """A stored version as a :class:`Configuration`.

    Versions saved before the budget variable was recorded take it from the registry now.
    """
    try:
        services = load_registry(settings.GPUCONFIG_COMPOSE_FILE).services
    except RegistryError:
        services = ()
    budget_envs = {s.name: s.budget_env for s in services}
    return Configuration.from_json(version.assignments, budget_envs=budget_envs)


def version_list() -> QuerySet[ConfigVersion]:
    return ConfigVersion.objects.select_related("created_by").order_by("-number")


def version_summary(version: ConfigVersion) -> dict[str, Any]:
    return {
        "number": version.number,
        "strategy": version.strategy,
        "created_at": version.created_at,
        "created_by": version.created_by.get_username() if version.created_by else None,
        "applied_at": version.applied_at,
        # Through the one type, so versions stored under older key names read the same.
        "assignments": Configuration.from_json(version.assignments).to_json(),
        "warnings": version.warnings,
    }
