"""The draft: saved settings + a user's changes -> a planned, evaluated configuration.

``gpu_config_draft`` is the one place that does this; the GET, Preview, Save and the settings
page all go through it, so they cannot disagree. It only reads: saving is
``gpuconfig.services.gpu_config_save``, which takes the draft a request made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from django.conf import settings

from common.errors import FieldError, FieldsRefusal
from gpuconfig import selectors
from gpuconfig.changes import ServiceChange, config_changes
from gpuconfig.domain import (
    Configuration,
    Evaluation,
    Gpu,
    Plan,
    PlanWarning,
    ResolvedAssignment,
    ServiceRequest,
    StrategyName,
    WarningCode,
    gpu_labels,
)
from gpuconfig.fleet import system_registry
from gpuconfig.measured import measured_vram_warnings
from gpuconfig.models import ConfigVersion, GpuConfiguration
from gpuconfig.registry import Registry
from gpuconfig.strategies import StrategyError, plan
from gpuconfig.strategies.cordon import maintenance_warnings
from gpuconfig.strategies.disruption import DEFAULT_TOLERANCE
from gpuconfig.validation import evaluate


class ConfigInputError(FieldsRefusal):
    """A request that cannot be saved (400): ``fields`` are the refused fields with their
    paths and services; ``errors`` maps the paths to messages (the API's shape)."""


@dataclass(frozen=True)
class AssignmentChange:
    """A user's choice for one service, as sent by the API or the settings form."""

    service: str
    gpu_index: int | None = None  # None: let the strategy decide
    vram_budget_override: float | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Draft:
    """A complete proposed configuration: what the files would say, and why."""

    strategy: StrategyName
    registry: Registry
    gpus: tuple[Gpu, ...]
    requests: tuple[ServiceRequest, ...]
    plan: Plan | None
    evaluation: Evaluation | None
    warnings: tuple[PlanWarning, ...]
    configuration: Configuration  # every registry service, enabled or not
    # The System setting vram_reserve_mb the draft was planned and evaluated with: whatever
    # else judges a fit beside it (the Recommended mark) takes this one.
    reserve_mb: int
    error: str = ""  # the strategy could not run (manual with a service unassigned, no GPUs)
    saved_version: int = 0
    changes: list[ServiceChange] = field(default_factory=list)
    from_scratch: bool = False  # planned from scratch, not keeping running services in place


def _requests(
    *,
    strategy: StrategyName,
    registry: Registry,
    rows: Mapping[str, GpuConfiguration],
    saved_strategy: StrategyName | None,
    changes: Sequence[AssignmentChange],
    current: Mapping[str, int] | None = None,
) -> tuple[ServiceRequest, ...]:
    """``current``: where each service is now when no saved row says so (under Manual a
    service the request does not name keeps that GPU)."""
    by_service = {c.service: c for c in changes}
    current = current or {}
    # Pins made under Manual pin *every* service; carried into an automatic strategy they
    # would leave it nothing to decide, so switching away from Manual starts unpinned.
    keep_pins = not (saved_strategy == StrategyName.MANUAL and strategy != StrategyName.MANUAL)
    requests = []
    for service in registry.services:
        row = rows.get(service.name)
        change = by_service.get(service.name)
        if change is not None:
            pin, budget, enabled = change.gpu_index, change.vram_budget_override, change.enabled
        elif row is not None:
            pin = row.gpu_index if keep_pins else None
            budget, enabled = row.vram_budget_override, row.enabled
        else:
            pin, budget, enabled = None, None, True
        if strategy == StrategyName.MANUAL and pin is None and row is not None:
            # Manual freezes what is saved: nothing moves unless the user moves it.
            pin = row.resolved_gpu_index
        elif strategy == StrategyName.MANUAL and change is None and row is None:
            # Nothing saved for it yet: it keeps the GPU the strategy in force gives it.
            pin = current.get(service.name)
        requests.append(
            ServiceRequest(
                service=service, pinned_gpu=pin, enabled=enabled, budget_override_gb=budget
            )
        )
    return tuple(requests)


def _configuration(
    requests: Sequence[ServiceRequest], evaluation: Evaluation | None, gpus: Sequence[Gpu]
) -> Configuration:
    """The evaluation's assignments completed with what the files and containers need."""
    by_service = {a.service: a for a in evaluation.assignments} if evaluation else {}
    by_index = {g.index: g for g in gpus}
    entries = []
    for request in requests:
        name = request.service.name
        resolved = by_service.get(name) or ResolvedAssignment(name, None)
        gpu = by_index.get(resolved.gpu_index) if resolved.gpu_index is not None else None
        entries.append(
            replace(
                resolved,
                gpu_uuid=gpu.uuid if gpu else "",
                gpu_name=gpu.name if gpu else "",
                gpu_vendor=gpu.vendor if gpu else "nvidia",
                gpu_device_index=gpu.device_index if gpu else None,
                gpu_render_node=gpu.render_node if gpu else "",
                pinned=request.pinned_gpu is not None,
                vram_budget_override=request.budget_override_gb,
                enabled=request.enabled,
                budget_env=request.service.budget_env,
            )
        )
    return Configuration(tuple(entries))


def _saved_placements(
    requests: Sequence[ServiceRequest], rows: Mapping[str, GpuConfiguration]
) -> dict[str, int] | None:
    """Where the saved rows put the enabled services, or None when one has no GPU yet
    (a service added to the compose file since the last save: it must be planned)."""
    placements = {}
    for request in requests:
        if not request.enabled:
            continue
        row = rows.get(request.service.name)
        if row is None or row.resolved_gpu_index is None:
            return None
        placements[request.service.name] = row.resolved_gpu_index
    return placements


def gpu_config_draft(
    *,
    strategy: StrategyName | None = None,
    changes: Sequence[AssignmentChange] = (),
    replan: bool = True,
    from_scratch: bool = False,
) -> Draft:
    """What ``strategy`` would assign with ``changes`` applied on top of what is saved.

    ``replan=False`` evaluates the saved resolved assignments as they are (the GET view):
    warnings then reflect the inventory now, e.g. a GPU that has disappeared since the save.

    An automatic strategy keeps the services of the configuration in force (the applied
    version, or before any apply the newest saved one) on their GPU where its goal allows
    (``Plan.disruption``); ``from_scratch=True`` asks for the full re-plan instead.
    """
    # Every host's services (with the hosts that define each), not only the local file's.
    registry = system_registry()
    config = selectors.system_config()
    latest = selectors.latest_version()
    saved_strategy = StrategyName(latest.strategy) if latest else None
    strategy = strategy or saved_strategy or config.default_strategy
    rows = selectors.saved_rows()
    gpus = selectors.planning_gpus()
    requests = _requests(
        strategy=strategy,
        registry=registry,
        rows=rows,
        saved_strategy=saved_strategy,
        changes=changes,
        current=_current_placements(
            strategy=strategy,
            in_force=saved_strategy or config.default_strategy,
            registry=registry,
            rows=rows,
            changes=changes,
            gpus=gpus,
            reserve_mb=config.vram_reserve_mb,
        ),
    )
    saved_placements = _saved_placements(requests, rows) if not replan and latest else None
    if saved_placements is None:
        plan_result, assignments, error = _planned(
            strategy,
            gpus,
            requests,
            reserve_mb=config.vram_reserve_mb,
            current=_in_force_placements(latest),
            tolerance=Fraction(config.disruption_tolerance_percent, 100),
            from_scratch=from_scratch,
        )
    else:
        plan_result, assignments, error = None, saved_placements, ""
    evaluation, warnings = _evaluated(
        strategy=strategy,
        gpus=gpus,
        requests=requests,
        assignments=assignments,
        reserve_mb=config.vram_reserve_mb,
        over_capacity=plan_result.over_capacity if plan_result else (),
    )
    configuration = _configuration(requests, evaluation, gpus)
    saved = Configuration.from_json(latest.assignments) if latest else None
    return Draft(
        strategy=strategy,
        registry=registry,
        gpus=gpus,
        requests=requests,
        plan=plan_result,
        evaluation=evaluation,
        warnings=_unique(warnings),
        configuration=configuration,
        reserve_mb=config.vram_reserve_mb,
        error=error,
        saved_version=latest.number if latest else 0,
        changes=config_changes(saved, configuration, gpu_labels(gpus)),
        from_scratch=from_scratch,
    )


def _current_placements(
    *,
    strategy: StrategyName,
    in_force: StrategyName,
    registry: Registry,
    rows: Mapping[str, GpuConfiguration],
    changes: Sequence[AssignmentChange],
    gpus: tuple[Gpu, ...],
    reserve_mb: int,
) -> dict[str, int]:
    """Under Manual, where the services with no saved row and no change run now: the plan of
    the strategy in force (on a fresh install, the default strategy's plan)."""
    named = {c.service for c in changes}
    if strategy != StrategyName.MANUAL or in_force == StrategyName.MANUAL:
        return {}
    if all(s.name in rows or s.name in named for s in registry.services):
        return {}
    requests = _requests(
        strategy=in_force, registry=registry, rows=rows, saved_strategy=in_force, changes=()
    )
    _, assignments, _ = _planned(in_force, gpus, requests, reserve_mb=reserve_mb)
    return assignments or {}


def _in_force_placements(latest: ConfigVersion | None) -> dict[str, int] | None:
    """Where the configuration in force puts the enabled services: the applied version,
    or before any apply the newest saved one (None: nothing saved yet)."""
    version = selectors.latest_applied_version() or latest
    return Configuration.from_json(version.assignments).placements() if version else None


def _planned(
    strategy: StrategyName,
    gpus: tuple[Gpu, ...],
    requests: tuple[ServiceRequest, ...],
    *,
    reserve_mb: int,
    current: Mapping[str, int] | None = None,
    tolerance: Fraction = DEFAULT_TOLERANCE,
    from_scratch: bool = False,
) -> tuple[Plan | None, dict[str, int] | None, str]:
    """The strategy's plan and its assignments, or the reason it could not run."""
    try:
        result = plan(
            strategy,
            gpus,
            requests,
            time_budget_ms=settings.GPUCONFIG_PLANNER_TIME_BUDGET_MS,
            reserve_mb=reserve_mb,
            current=current,
            tolerance=tolerance,
            from_scratch=from_scratch,
        )
    except StrategyError as exc:
        return None, None, str(exc)
    return result, dict(result.assignments), ""


def _evaluated(
    *,
    strategy: StrategyName,
    gpus: tuple[Gpu, ...],
    requests: tuple[ServiceRequest, ...],
    assignments: dict[str, int] | None,
    reserve_mb: int,
    over_capacity: tuple[str, ...],
) -> tuple[Evaluation | None, list[PlanWarning]]:
    """Budgets and warnings for ``assignments`` (None: the strategy could not place them)."""
    if not any(g.present for g in gpus):
        return None, [PlanWarning(WarningCode.NO_GPUS, "No GPUs detected")]
    if assignments is None:
        return None, []
    applied = _applied_placements()
    evaluation = evaluate(
        gpus,
        requests,
        assignments,
        reserve_mb=reserve_mb,
        applied=applied,
        strategy=strategy,
        over_capacity=over_capacity,
    )
    warnings = list(evaluation.warnings)
    # A pin onto a GPU in maintenance: allowed to be saved, refused on Apply.
    warnings.extend(maintenance_warnings(gpus, requests, assignments, applied))
    # Measured VRAM: services over their estimate, and moves that the target GPU's real
    # free memory cannot hold (only where per-process memory is measured).
    warnings.extend(
        measured_vram_warnings(
            gpus=gpus,
            requests=requests,
            assignments=assignments,
            budgets_gb={a.service: a.vram_budget_gb for a in evaluation.assignments},
            applied=applied,
        )
    )
    return evaluation, warnings


def _applied_placements() -> dict[str, int] | None:
    """Where the managed services run now, as far as GPU Config knows (for external-use checks)."""
    version = selectors.latest_applied_version()
    return Configuration.from_json(version.assignments).placements() if version else None


def _unique(warnings: list[PlanWarning]) -> tuple[PlanWarning, ...]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for w in warnings:
        key = (w.code, w.service, w.gpu_index, w.message)
        if key not in seen:
            seen.add(key)
            out.append(w)
    return tuple(out)


def validate_changes(
    changes: Sequence[AssignmentChange], registry: Registry, gpus: Sequence[Gpu]
) -> None:
    """Refuse what can never be saved, with one message per field (nothing is written)."""
    errors: list[FieldError] = []
    seen: set[str] = set()
    known_gpus = {g.index for g in gpus}
    for i, change in enumerate(changes):
        name = change.service
        service = registry.get(name)
        if name in seen or service is None:
            message = (
                f"{name} appears more than once"
                if name in seen
                else f"unknown service {name!r}; managed services: " + ", ".join(registry.names())
            )
            errors.append(FieldError("service", message, i, name))
            continue
        seen.add(name)
        if change.gpu_index is not None and change.gpu_index not in known_gpus:
            detected = ", ".join(str(g) for g in sorted(known_gpus)) or "none"
            message = f"GPU {change.gpu_index} has never been detected (detected: {detected})"
            errors.append(FieldError("gpu_index", message, i, name))
        if change.vram_budget_override is not None and service.budget_env is None:
            message = f"{name} takes no VRAM budget (no gpuconfig.budget_env label)"
            errors.append(FieldError("vram_budget_override", message, i, name))
    if errors:
        raise ConfigInputError(errors)


def version_restore_draft(version: ConfigVersion) -> Draft:
    """A draft that puts back ``version``'s placement (issue 19, "restore any version"): under
    Manual, each service of the version on the GPU it had, with the budget the user had typed
    and its switch; services the version did not know keep what is saved now, and those the
    compose file no longer defines are left out. Like any draft it saves nothing: the preview
    shows what restoring it moves, Save or Apply restores it."""
    defined = set(system_registry().names())
    changes = [
        AssignmentChange(
            service=entry.service,
            gpu_index=entry.gpu_index if entry.enabled else None,
            vram_budget_override=entry.vram_budget_override,
            enabled=entry.enabled,
        )
        for entry in selectors.version_configuration(version).assignments
        if entry.service in defined
    ]
    return gpu_config_draft(strategy=StrategyName.MANUAL, changes=changes)
