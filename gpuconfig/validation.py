"""Check a set of assignments: warnings, VRAM budgets and planned VRAM per GPU.

Pure function over the dataclasses of `gpuconfig.domain`: no Django, no I/O. Warnings
never block; they tell the user what will not fit and what was adjusted.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from gpuconfig.domain import (
    ACCELERATOR_LABELS,
    ACCELERATOR_VENDOR,
    MIB_PER_GIB,
    STRATEGY_LABELS,
    VENDOR_LABELS,
    Evaluation,
    Gpu,
    PlanWarning,
    ResolvedAssignment,
    ServiceRequest,
    StrategyName,
    WarningCode,
    adjustable,
    demand_mb,
    format_vram,
    gpu_label,
    gpu_labels,
    least_budget_mb,
    least_budget_tenths,
    runs_on,
    tenths_mib,
    tenths_within,
)

__all__ = ["evaluate"]


@dataclass(frozen=True)
class _Budget:
    """Outcome of the budget step for one service on a present GPU."""

    planned_mb: int
    budget_gb: float | None
    auto_adjusted: bool
    warning: PlanWarning | None = None
    fits_by_adjustment: bool = False


def evaluate(
    gpus: Sequence[Gpu],
    requests: Sequence[ServiceRequest],
    assignments: Mapping[str, int],
    *,
    reserve_mb: int,
    applied: Mapping[str, int] | None = None,
    strategy: StrategyName | None = None,
    over_capacity: Collection[str] = (),
) -> Evaluation:
    """Resolve budgets and collect warnings for `assignments` (service name -> GPU index).

    Only enabled services that have an assignment are evaluated; assignments of unknown or
    disabled services are ignored.

    * Budgets: a service with `budget_env` and no override that does not fit on its GPU
      (its estimate exceeds capacity - other services' demands - `reserve_mb`) gets the
      most whole tenths of a GiB that fit into that room (`domain.tenths_within`). When
      several such services share a GPU, the room left by the others is split in
      proportion to their estimates (for one service this is exactly the rule above), each
      keeping at least its minimum
      (`domain.least_budget_mb`). Below its minimum a service is not given an invented
      budget: a BUDGET_BELOW_MINIMUM warning says it will not fit there, it is planned
      at its minimum, and it counts as over capacity. An explicit override always wins.
    * `reserve_mb` has no default: callers pass the one in force (the System setting
      ``vram_reserve_mb``), the same the planner was given, so both judge a fit alike.
    * `applied` (service -> GPU of the configuration running now) lets the VRAM in use on
      a GPU be split into managed services (their estimates) and outside processes. None
      means unknown (nothing applied through GPU Config yet): no outside-use warning then.
    * `strategy` enables the strategy-specific warning SINGLE_GPU_ISOLATION.
    * `over_capacity` (usually `Plan.over_capacity`) turns into NOT_PLACED_WITHIN_CAPACITY
      warnings, except for services that auto-adjusted budgets make fit.

    Messages print VRAM with `format_vram` (GiB with one decimal) and budgets in GiB.
    """
    present = {g.index: g for g in gpus if g.present}
    # How the sentences name each GPU ("gpu-box-2 / GPU 1" for another host's), including
    # the ones that disappeared, which the GPU_MISSING warning still names by their host.
    labels = gpu_labels(gpus)
    chosen = [
        (r, assignments[r.service.name])
        for r in requests
        if r.enabled and r.service.name in assignments
    ]

    warnings: list[PlanWarning] = []
    if not present:
        warnings.append(
            PlanWarning(WarningCode.NO_GPUS, "No NVIDIA GPUs detected; services cannot run.")
        )

    # Budgets are decided per GPU, since each depends on what else shares the card.
    on_gpu: dict[int, list[ServiceRequest]] = {index: [] for index in present}
    for request, index in chosen:
        if index in present:
            on_gpu[index].append(request)
    budgets: dict[str, _Budget] = {}
    for index, sharing in on_gpu.items():
        budgets |= _budgets(present[index], sharing, reserve_mb)
    planned = {
        index: sum(budgets[r.service.name].planned_mb for r in sharing)
        for index, sharing in sorted(on_gpu.items())
    }

    resolved: list[ResolvedAssignment] = []
    for request, index in chosen:
        name = request.service.name
        budget = budgets.get(name)
        if budget is None:  # the GPU is not there: nothing to size the budget against
            # Same sentence whether the GPU was never seen or has disappeared since.
            warnings.append(
                PlanWarning(
                    WarningCode.GPU_MISSING,
                    f"{name} is assigned to {labels.get(index) or gpu_label(index)}, "
                    "which is not detected",
                    name,
                    index,
                )
            )
            resolved.append(ResolvedAssignment(name, index, request.budget_override_gb, False))
            continue
        resolved.append(ResolvedAssignment(name, index, budget.budget_gb, budget.auto_adjusted))
        if budget.warning is not None:
            warnings.append(budget.warning)
        warnings.extend(_size_warnings(request, present[index]))
        # An adjusted budget is what makes such a service fit (its own, or that of another
        # service sharing the GPU, which shrank to leave it room): no need to alarm the user.
        if (
            name in over_capacity
            and not budget.fits_by_adjustment
            and planned[index] > present[index].vram_total_mb
        ):
            warnings.append(
                PlanWarning(
                    WarningCode.NOT_PLACED_WITHIN_CAPACITY,
                    f"{name} could not be placed within any GPU's capacity; "
                    f"it is assigned to {labels[index]} anyway",
                    name,
                    index,
                )
            )

    warnings.extend(
        _gpu_warnings(
            present, on_gpu, planned, requests=requests, applied=applied, reserve_mb=reserve_mb
        )
    )
    warnings.extend(_accelerator_warnings(requests, assignments, present))

    if strategy is StrategyName.ISOLATION_FIRST and len(present) == 1:
        (only,) = present
        warnings.append(
            PlanWarning(
                WarningCode.SINGLE_GPU_ISOLATION,
                f"{STRATEGY_LABELS[strategy]} needs two GPUs, but only {labels[only]} is "
                "detected: the LLM shares it with every other service",
                None,
                only,
            )
        )

    return Evaluation(
        assignments=tuple(resolved), warnings=tuple(warnings), planned_vram_mb=planned
    )


def _gpu_warnings(
    present: Mapping[int, Gpu],
    on_gpu: Mapping[int, list[ServiceRequest]],
    planned: Mapping[int, int],
    *,
    requests: Sequence[ServiceRequest],
    applied: Mapping[str, int] | None,
    reserve_mb: int,
) -> list[PlanWarning]:
    """The warnings about a whole GPU: what its services add up to, and outside use."""
    found: list[PlanWarning] = []
    for index, sharing in sorted(on_gpu.items()):
        gpu = present[index]
        label = gpu_label(gpu.index, gpu.host)
        if len(sharing) > 1 and planned[index] > gpu.vram_total_mb:
            found.append(
                PlanWarning(
                    WarningCode.COMBINED_EXCEEDS_GPU,
                    f"Combined VRAM (~{format_vram(planned[index])}) exceeds {label} "
                    f"capacity ({format_vram(gpu.vram_total_mb)})",
                    None,
                    index,
                )
            )
        # Without a record of what runs where (nothing applied yet), used VRAM cannot be
        # split into ours and theirs: say nothing rather than blame the services' own use.
        external = _external_use(gpu, requests, applied) if applied is not None else None
        if external is not None and external > reserve_mb:
            real_free = max(0, gpu.vram_total_mb - external)
            found.append(
                PlanWarning(
                    WarningCode.EXTERNAL_VRAM_USE,
                    f"{label} has {format_vram(external)} in use by processes outside the "
                    f"managed services; real free VRAM is {format_vram(real_free)}",
                    None,
                    index,
                )
            )
    return found


def accelerator_mismatch(
    service: str, accelerator: str, gpu_index: int, vendor: str, host: str = ""
) -> str:
    """The sentence for a service assigned to a GPU it cannot run on (also Apply's refusal);
    ``host``: the GPU's host's name, when it is known (`domain.gpu_label`)."""
    return (
        f"{service} runs on {ACCELERATOR_LABELS.get(accelerator, accelerator)} "
        f"(gpuconfig.accelerator: {accelerator}) but {gpu_label(gpu_index, host)} is an "
        f"{VENDOR_LABELS.get(vendor, vendor)} GPU; pin it to "
        # "an NVIDIA", "an AMD": both names are read letter by letter or start with a vowel.
        f"an {VENDOR_LABELS.get(ACCELERATOR_VENDOR.get(accelerator, ''), 'matching')} GPU"
    )


def _accelerator_warnings(
    requests: Sequence[ServiceRequest], assignments: Mapping[str, int], present: Mapping[int, Gpu]
) -> list[PlanWarning]:
    """The vendor rule: a service on a GPU it cannot run on, or with no such GPU at all."""
    warnings = []
    for request in requests:
        name, accelerator = request.service.name, request.service.accelerator
        if not request.enabled:
            continue
        index = assignments.get(name)
        gpu = present.get(index) if index is not None else None
        if gpu is not None and not runs_on(accelerator, gpu.vendor):
            warnings.append(
                PlanWarning(
                    WarningCode.ACCELERATOR_MISMATCH,
                    accelerator_mismatch(name, accelerator, gpu.index, gpu.vendor, gpu.host),
                    name,
                    gpu.index,
                )
            )
        elif (
            index is None
            and present
            and not any(runs_on(accelerator, g.vendor) for g in present.values())
        ):
            vendor = VENDOR_LABELS.get(ACCELERATOR_VENDOR.get(accelerator, ""), "matching")
            warnings.append(
                PlanWarning(
                    WarningCode.NO_MATCHING_GPU,
                    f"{name} runs on {ACCELERATOR_LABELS.get(accelerator, accelerator)} "
                    f"(gpuconfig.accelerator: {accelerator}) but no {vendor} GPU is detected; "
                    "it is not placed",
                    name,
                )
            )
    return warnings


def _budgets(gpu: Gpu, sharing: list[ServiceRequest], reserve_mb: int) -> dict[str, _Budget]:
    """Decide the budget and planned MB of every service on one present GPU."""
    total = gpu.vram_total_mb
    capacity = format_vram(total)
    label = gpu_label(gpu.index, gpu.host)
    # Services whose demand is set (no budget variable, or an explicit override) are
    # fixed; the adjustable ones share whatever room the fixed ones and the reserve leave.
    flexible = [r for r in sharing if adjustable(r)]
    fixed = [r for r in sharing if r not in flexible]
    fixed_mb = sum(demand_mb(r) for r in fixed)
    room = total - fixed_mb - reserve_mb
    wanted = sum(r.service.vram_estimate_mb for r in flexible)

    result: dict[str, _Budget] = {}
    if wanted <= room:
        result |= {
            r.service.name: _Budget(r.service.vram_estimate_mb, None, False) for r in flexible
        }
    else:
        # Which adjustable services get at least their minimum: the smallest minimums
        # first (as many as possible); the others do not fit on this GPU.
        fitting: list[ServiceRequest] = []
        taken = 0
        for request in sorted(flexible, key=lambda r: least_budget_mb(r.service)):
            if taken + least_budget_mb(request.service) <= room:
                fitting.append(request)
                taken += least_budget_mb(request.service)
        tenths = _shares(fitting, room)
        for request in flexible:
            name, estimate = request.service.name, request.service.vram_estimate_mb
            if name in tenths and tenths[name] is None:  # the others left it enough room
                result[name] = _Budget(estimate, None, False)
                continue
            if name in tenths:
                share = tenths[name]
                assert share is not None
                budget_gb = share / 10
                if estimate > total:
                    reason = f"exceeds {label} ({capacity})"
                else:
                    reason = f"exceeds the {_room(room)} left on {label} ({capacity})"
                warning = PlanWarning(
                    WarningCode.BUDGET_ADJUSTED,
                    f"{name} VRAM budget ({format_vram(estimate)}) {reason}. "
                    f"Auto-adjusted to {budget_gb:.1f} GiB.",
                    name,
                    gpu.index,
                )
                result[name] = _Budget(
                    tenths_mib(share), budget_gb, True, warning, fits_by_adjustment=True
                )
                continue
            # Below its minimum the service cannot work: say it does not fit rather than
            # invent a budget. It is planned at its minimum (the least it takes), which is
            # also the budget it gets if the plan is applied anyway.
            least = least_budget_mb(request.service)
            where = (
                "its minimum"
                if request.service.vram_min_mb is not None
                else "the least budget GPU Config gives a service"
            )
            warning = PlanWarning(
                WarningCode.BUDGET_BELOW_MINIMUM,
                f"{name} will not fit on {label} ({capacity}): it needs a VRAM budget "
                f"of at least {format_vram(least)} ({where}), but only {_room(room)} is "
                f"left after the other services and the {format_vram(reserve_mb)} reserve.",
                name,
                gpu.index,
            )
            result[name] = _Budget(least, least_budget_tenths(request.service) / 10, True, warning)

    adjusted_mb = sum(result[r.service.name].planned_mb for r in flexible)
    for request in fixed:
        name, demand = request.service.name, demand_mb(request)
        override = request.budget_override_gb
        too_large: PlanWarning | None = None
        if override is not None:
            left = total - (fixed_mb - demand) - adjusted_mb - reserve_mb
            if demand > left:
                too_large = PlanWarning(
                    WarningCode.BUDGET_OVERRIDE_TOO_LARGE,
                    f"{name} VRAM budget override ({override:.1f} GiB) exceeds the "
                    f"{_room(left)} left on {label} ({capacity})",
                    name,
                    gpu.index,
                )
        result[name] = _Budget(demand, override, False, too_large)
    return result


def _shares(fitting: list[ServiceRequest], room: int) -> dict[str, int | None]:
    """Budgets in tenths of a GiB for adjustable services whose minimums fit into `room`.

    None for all of them when their estimates fit (others that did not fit left the
    room). Otherwise the room is split in proportion to their estimates (for one service:
    all of it), floored to whole tenths so that the sum stays inside. When that would put
    one below its minimum, each gets its minimum and the rest is split in proportion to
    what each wants beyond it.
    """
    wanted = sum(r.service.vram_estimate_mb for r in fitting)
    if wanted <= room:
        return dict.fromkeys((r.service.name for r in fitting), None)
    tenths: dict[str, int | None] = {
        # Integer arithmetic: floor(room * estimate / wanted) MiB in whole tenths of a GiB.
        r.service.name: room * r.service.vram_estimate_mb * 10 // (wanted * MIB_PER_GIB)
        for r in fitting
    }
    if all(tenths_mib(tenths[r.service.name] or 0) >= least_budget_mb(r.service) for r in fitting):
        return tenths
    least = {r.service.name: least_budget_mb(r.service) for r in fitting}
    beyond = {r.service.name: r.service.vram_estimate_mb - least[r.service.name] for r in fitting}
    spare = room - sum(least.values())
    extra_total = sum(beyond.values())
    return {
        name: tenths_within(
            least[name] + (spare * beyond[name] // extra_total if extra_total else 0)
        )
        for name in least
    }


def _room(mib: int) -> str:
    """Room left on a GPU, rounded down like the budgets cut to fit it, so the numbers agree."""
    return format_vram(max(0, mib), round_down=True)


def _size_warnings(request: ServiceRequest, gpu: Gpu) -> list[PlanWarning]:
    """A service that alone exceeds its GPU (budget-driven services are handled above)."""
    service = request.service
    if adjustable(request) or request.budget_override_gb is not None:
        return []  # its budget was adjusted, or the override warning already says it
    demand = demand_mb(request)
    if demand <= gpu.vram_total_mb:
        return []
    capacity, label = format_vram(gpu.vram_total_mb), gpu_label(gpu.index, gpu.host)
    if service.role == "llm":
        return [
            PlanWarning(
                WarningCode.LLM_ON_SMALL_GPU,
                f"{service.model} requires ~{format_vram(demand)}, {label} only has {capacity}",
                service.name,
                gpu.index,
            )
        ]
    return [
        PlanWarning(
            WarningCode.SERVICE_EXCEEDS_GPU,
            f"{service.name} needs ~{format_vram(demand)}, exceeds {label} ({capacity})",
            service.name,
            gpu.index,
        )
    ]


def _external_use(
    gpu: Gpu, requests: Sequence[ServiceRequest], applied: Mapping[str, int]
) -> int | None:
    """MB in use on the GPU beyond the estimates of the managed services running there."""
    if gpu.vram_used_mb is None:
        return None
    managed = sum(
        r.service.vram_estimate_mb for r in requests if applied.get(r.service.name) == gpu.index
    )
    return gpu.vram_used_mb - managed
