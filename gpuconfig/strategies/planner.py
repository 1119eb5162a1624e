"""`plan()`: checks the input, builds the inventory, and hands it to the strategy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gpuconfig.domain import (
    ACCELERATOR_LABELS,
    ACCELERATOR_VENDOR,
    VENDOR_LABELS,
    Gpu,
    Optimality,
    Plan,
    ServiceRequest,
    StrategyName,
    demand_mb,
    runs_on,
)
from gpuconfig.strategies.balanced import balance_flexibly
from gpuconfig.strategies.budget import DEFAULT_TIME_BUDGET_MS, Budget
from gpuconfig.strategies.harm import over_capacity
from gpuconfig.strategies.inventory import (
    Inventory,
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


def plan(
    strategy: StrategyName | str,
    gpus: Sequence[Gpu],
    requests: Sequence[ServiceRequest],
    *,
    reserve_mb: int,
    time_budget_ms: int = DEFAULT_TIME_BUDGET_MS,
) -> Plan:
    """Assign every enabled service to a GPU with the given strategy.

    `reserve_mb` is the VRAM reserve the validator keeps free on a GPU where it sizes an
    adjustable budget (`validation.evaluate`); the planner counts it beside such services
    when it asks whether they fit at their least (`need_of`). It has no default: every
    caller passes the one in force (the System setting ``vram_reserve_mb``), so that the
    planner and the validator never judge a fit on different numbers.

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
    inventory = _pinned_inventory(present, enabled, reserve_mb)

    budget = Budget(time_budget_ms)
    notes: list[str] = []
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


def _vendor_bound(movable: Sequence[ServiceRequest], present: Sequence[Gpu]) -> bool:
    """Whether some service to place cannot run on some present GPU (else: no vendor rule
    to apply, and every strategy plans exactly as it did before AMD GPUs existed)."""
    return any(not runs_on(r.service.accelerator, g.vendor) for r in movable for g in present)


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
        notes.extend(sub.notes)
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
