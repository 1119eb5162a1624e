"""`plan()`: checks the input, builds the inventory, and hands it to the strategy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from fractions import Fraction

from gpuconfig.domain import (
    ACCELERATOR_LABELS,
    ACCELERATOR_VENDOR,
    VENDOR_LABELS,
    Disruption,
    Gpu,
    Optimality,
    Plan,
    ServiceRequest,
    StrategyName,
    defined_on,
    demand_mb,
    gpu_label,
    gpu_labels,
    restart_cost_ms,
    runs_on,
)
from gpuconfig.strategies.balanced import balance_flexibly
from gpuconfig.strategies.budget import DEFAULT_TIME_BUDGET_MS, Budget
from gpuconfig.strategies.disruption import (
    DEFAULT_TOLERANCE,
    Current,
    disruption_of,
    keep_in_place,
)
from gpuconfig.strategies.harm import over_capacity
from gpuconfig.strategies.inventory import (
    Inventory,
    Item,
    StrategyError,
    check_gpus,
    check_requests,
    need_of,
)
from gpuconfig.strategies.rules import (
    isolation_items,
    latency_items,
    place_by_rule,
    vram_based_items,
)

# The share of the time budget the search for the plan with the fewest moves gets (only
# when the planner is told where services run now).
_KEEP_SHARE_PERCENT = 40


def plan(
    strategy: StrategyName | str,
    gpus: Sequence[Gpu],
    requests: Sequence[ServiceRequest],
    *,
    reserve_mb: int,
    time_budget_ms: int = DEFAULT_TIME_BUDGET_MS,
    current: Mapping[str, int] | None = None,
    tolerance: Fraction = DEFAULT_TOLERANCE,
    from_scratch: bool = False,
) -> Plan:
    """Assign every enabled service to a GPU with the given strategy.

    `reserve_mb` is the VRAM reserve the validator keeps free on a GPU where it sizes an
    adjustable budget (`validation.evaluate`); the planner counts it beside such services
    when it asks whether they fit at their least (`need_of`). It has no default: every
    caller passes the one in force (the System setting ``vram_reserve_mb``), so that the
    planner and the validator never judge a fit on different numbers.

    `current` maps the services of the configuration in force to the GPU index they run
    on. With it, an automatic strategy keeps them there unless its goal needs them
    elsewhere, and then moves the least restart cost (`disruption`): for balanced, any plan
    within `tolerance` (a fraction of the optimum's highest utilization) of the optimum
    will do. `Plan.disruption` then compares its moves with the re-plan from scratch's;
    `from_scratch=True` makes the assignments follow the re-plan from scratch instead.

    Raises `StrategyError` for input no strategy can honour: duplicate service names or
    GPU indexes, a missing or negative demand, a present GPU without VRAM, an unpinned
    enabled service under the manual strategy, or services to place while no GPU is present.
    """
    try:
        strategy = StrategyName(strategy)
    except ValueError:
        raise StrategyError(f"Unknown strategy {strategy!r}") from None
    enabled = check_requests(requests)

    if strategy is StrategyName.MANUAL:
        for request in enabled:
            if request.pinned_gpu is None:
                raise StrategyError(
                    f"Manual strategy: {request.service.name} has no GPU assigned; "
                    "pin it to a GPU or choose an automatic strategy"
                )
        return Plan(
            assignments={r.service.name: r.pinned_gpu for r in enabled if r.pinned_gpu is not None},
            over_capacity=(),
            notes=tuple(_pins_off_their_hosts(gpus, enabled)),
        )

    present = check_gpus(gpus)
    pins: dict[str, int] = {
        r.service.name: r.pinned_gpu for r in enabled if r.pinned_gpu is not None
    }
    movable = [r for r in enabled if r.pinned_gpu is None]
    if movable and not present:
        raise StrategyError(
            f"No GPUs detected: cannot place {', '.join(r.service.name for r in movable)}"
        )
    if not present:  # only pins, to GPUs that are not there: nothing to decide
        return Plan(
            assignments={r.service.name: pins[r.service.name] for r in enabled}, over_capacity=()
        )
    if _vendor_bound(movable, present):
        return _plan_by_accelerator(
            strategy, present, enabled, reserve_mb=reserve_mb, time_budget_ms=time_budget_ms
        )
    notes: list[str] = _pins_off_their_hosts(gpus, enabled)
    enabled, movable = _without_homeless(present, enabled, movable, notes)
    inventory = _pinned_inventory(present, enabled, reserve_mb)

    # Keeping services in place gets its own share of the time budget, so that the
    # strategy's search cannot leave it nothing.
    share = _keep_share(time_budget_ms, current)
    budget = Budget(time_budget_ms - share)
    optimality: Optimality | None = None
    if strategy is StrategyName.BALANCED:
        items = vram_based_items(inventory, movable)
        choice, over, optimality = balance_flexibly(inventory, items, notes, budget)
    else:
        if strategy is StrategyName.VRAM_BASED:
            items = vram_based_items(inventory, movable)
        elif strategy is StrategyName.LATENCY_OPTIMIZED:
            items = latency_items(inventory, movable, notes)
        else:
            items = isolation_items(inventory, enabled, notes)
        choice = place_by_rule(inventory, items, notes, budget)
        over = over_capacity(inventory, items, choice)

    disruption: Disruption | None = None
    if current is not None:
        choice, disruption = _least_disruption(
            inventory,
            items,
            choice,
            over=over,
            pins=pins,
            current=Current(
                placements=current,
                costs={r.service.name: restart_cost_ms(r.service) for r in enabled},
                tolerance=tolerance,
                from_scratch=from_scratch,
            ),
            budget=Budget(share),
            # Balanced's goal: within the tolerance of its optimum; the rules' goal: their tiers.
            bound=(
                optimality.lower_bound
                if optimality is not None and strategy is StrategyName.BALANCED
                else None
            ),
        )
        optimality = _as_kept(optimality, disruption)

    placed = pins | {
        item.name: inventory.gpus[p].index for item, p in zip(items, choice, strict=True)
    }
    order = {r.service.name: i for i, r in enumerate(enabled)}
    return Plan(
        # Keep the caller's service order so the plan reads like the request list.
        assignments={r.service.name: placed[r.service.name] for r in enabled},
        over_capacity=tuple(sorted(over, key=order.__getitem__)),
        notes=tuple(notes),
        optimality=optimality,
        disruption=disruption,
    )


def _least_disruption(
    inventory: Inventory,
    items: list[Item],
    choice: list[int],
    *,
    over: set[str],
    pins: Mapping[str, int],
    current: Current,
    budget: Budget,
    bound: float | None,
) -> tuple[list[int], Disruption]:
    """The plan that keeps running services in place (`disruption.keep_in_place`) and its
    `Disruption`; the scratch plan's placement when asked for."""
    position = {gpu.index: p for p, gpu in enumerate(inventory.gpus)}
    arrivals: dict[int, list[str]] = {}
    pinned_moves: list[tuple[str, str]] = []
    labels = gpu_labels(inventory.gpus)
    for name, pin in pins.items():
        if name in current.placements and current.placements[name] != pin:
            pinned_moves.append((name, f"pinned to {labels.get(pin) or gpu_label(pin)}"))
            if pin in position:
                arrivals.setdefault(position[pin], []).append(f"{name}, pinned there")
    least = keep_in_place(
        inventory,
        items,
        choice,
        over=over,
        current=current,
        budget=budget,
        arrivals=arrivals,
        balanced_bound=None if bound is None else Fraction(bound),
    )
    disruption = disruption_of(least, pinned_moves, current)
    return (choice if current.from_scratch else least.choice), disruption


def _keep_share(time_budget_ms: int, current: Mapping[str, int] | None) -> int:
    """The milliseconds of the budget the search for the fewest moves gets (none without
    a configuration in force)."""
    return 0 if current is None else time_budget_ms * _KEEP_SHARE_PERCENT // 100


def _as_kept(optimality: Optimality | None, disruption: Disruption) -> Optimality | None:
    """Balanced's figures for the plan the assignments follow: the least-disruption plan's
    highest utilization against the same bound (proven only if no higher than the optimum)."""
    value = disruption.max_utilization
    if optimality is None or value is None or disruption.from_scratch:
        return optimality
    return replace(
        optimality,
        max_utilization=value,
        proven=optimality.proven and value <= optimality.max_utilization,
    )


def _pinned_inventory(
    present: Sequence[Gpu], enabled: Sequence[ServiceRequest], reserve_mb: int
) -> Inventory:
    """The present GPUs with the load their pinned services put on them."""
    position = {gpu.index: p for p, gpu in enumerate(present)}
    fixed = [0] * len(present)
    fixed_need = [0] * len(present)
    for request in enabled:
        if request.pinned_gpu is not None and request.pinned_gpu in position:
            need = need_of(request, reserve_mb)
            fixed[position[request.pinned_gpu]] += max(demand_mb(request), need)
            fixed_need[position[request.pinned_gpu]] += need
    return Inventory(
        gpus=tuple(present),
        caps=tuple(g.vram_total_mb for g in present),
        fixed=tuple(fixed),
        fixed_need=tuple(fixed_need),
        reserve_mb=max(0, reserve_mb),
    )


def _host_names(hosts: frozenset[str]) -> str:
    return ", ".join(sorted(host or "the local host" for host in hosts)) or "no host"


def _without_homeless(
    present: Sequence[Gpu],
    enabled: list[ServiceRequest],
    movable: list[ServiceRequest],
    notes: list[str],
) -> tuple[list[ServiceRequest], list[ServiceRequest]]:
    """The host rule's last word: a service none of whose hosts has a GPU here is left
    unplaced with a note, never put on another host's GPU. (Enabled, movable) without them."""
    homeless = [r for r in movable if not any(defined_on(r.service, g) for g in present)]
    if not homeless:
        return enabled, movable
    for request in homeless:
        hosts = request.service.hosts or frozenset()
        notes.append(
            f"{request.service.name} is defined only on {_host_names(hosts)}, and no GPU "
            "there can take it: it is not placed."
        )
    return (
        [r for r in enabled if r not in homeless],
        [r for r in movable if r not in homeless],
    )


def _pins_off_their_hosts(gpus: Sequence[Gpu], enabled: Sequence[ServiceRequest]) -> list[str]:
    """A note per service pinned to a GPU of a host that does not define it (the pin stands:
    it is the user's choice; the validator warns)."""
    by_index = {gpu.index: gpu for gpu in gpus}
    notes = []
    for request in enabled:
        gpu = by_index.get(request.pinned_gpu) if request.pinned_gpu is not None else None
        hosts = request.service.hosts
        if gpu is None or hosts is None or defined_on(request.service, gpu):
            continue
        label = gpu_label(gpu.index, gpu.host)
        # A local GPU's label does not name its host: say it.
        where = (
            label
            if label != gpu_label(gpu.index)
            else f"{label} on {_host_names(frozenset({gpu.host}))}"
        )
        notes.append(
            f"{request.service.name} is pinned to {where}, which does not define it (it is "
            f"defined on {_host_names(hosts)}): the pin stands."
        )
    return notes


def _vendor_bound(movable: Sequence[ServiceRequest], present: Sequence[Gpu]) -> bool:
    """Whether some service to place cannot run on some present GPU (else: no vendor rule
    to apply, and every strategy plans exactly as it did before AMD GPUs existed)."""
    vendors = {g.vendor for g in present}  # a few vendors, not hundreds of GPUs
    accelerators = {r.service.accelerator for r in movable}
    return any(not runs_on(a, v) for a in accelerators for v in vendors)


def _plan_by_accelerator(
    strategy: StrategyName,
    present: Sequence[Gpu],
    enabled: Sequence[ServiceRequest],
    *,
    reserve_mb: int,
    time_budget_ms: int,
) -> Plan:
    """The vendor rule: a service goes only to a GPU it can run on (its
    ``gpuconfig.accelerator``: cuda on NVIDIA, rocm on AMD, any on either).

    The strategy itself is unchanged: it plans each vendor's services over that vendor's
    GPUs, then the services that run anywhere over all GPUs; each round counts what the
    rounds before placed as pinned load. A service whose vendor has no GPU here is left
    unplaced (a note says so; the validator warns), never put on a GPU it cannot use.
    """
    placed = {r.service.name: r.pinned_gpu for r in enabled if r.pinned_gpu is not None}
    movable = [r for r in enabled if r.pinned_gpu is None]
    rounds: list[tuple[list[Gpu], list[ServiceRequest]]] = []
    for vendor in sorted(
        {v for r in movable if (v := ACCELERATOR_VENDOR.get(r.service.accelerator))}
    ):
        rounds.append(
            (
                [g for g in present if g.vendor == vendor],
                [r for r in movable if ACCELERATOR_VENDOR.get(r.service.accelerator) == vendor],
            )
        )
    anywhere = [r for r in movable if r.service.accelerator not in ACCELERATOR_VENDOR]
    if anywhere:
        rounds.append((list(present), anywhere))

    notes: list[str] = []
    over: set[str] = set()
    optimality: list[Optimality | None] = []
    for gpus, requests in rounds:
        if not gpus:
            for request in requests:
                accelerator = request.service.accelerator
                notes.append(
                    f"{request.service.name} runs on {ACCELERATOR_LABELS[accelerator]} "
                    f"(gpuconfig.accelerator: {accelerator}) but no "
                    f"{VENDOR_LABELS[ACCELERATOR_VENDOR[accelerator]]} GPU is detected: "
                    "it is not placed."
                )
            continue
        fixed = [
            replace(r, pinned_gpu=placed[r.service.name])
            for r in enabled
            if r.service.name in placed
        ]
        sub = plan(
            strategy,
            gpus,
            [*fixed, *requests],
            reserve_mb=reserve_mb,
            time_budget_ms=max(1, time_budget_ms // len(rounds)),
        )
        names = {r.service.name for r in requests}
        placed |= {name: index for name, index in sub.assignments.items() if name in names}
        over |= set(sub.over_capacity) & names
        notes.extend(note for note in sub.notes if note not in notes)
        optimality.append(sub.optimality)
    order = {r.service.name: i for i, r in enumerate(enabled)}
    return Plan(
        assignments={
            r.service.name: placed[r.service.name] for r in enabled if r.service.name in placed
        },
        over_capacity=tuple(sorted(over, key=order.__getitem__)),
        notes=tuple(notes),
        # Proven optimal per round is proven overall only when one round placed anything.
        optimality=optimality[0] if len(optimality) == 1 else None,
    )
