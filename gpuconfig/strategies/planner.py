"""`plan()`: checks the input, builds the inventory, and hands it to the strategy."""

from __future__ import annotations

from collections.abc import Sequence

from gpuconfig.domain import Gpu, Optimality, Plan, ServiceRequest, StrategyName, demand_mb
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
    position = {gpu.index: p for p, gpu in enumerate(present)}
    fixed = [0] * len(present)
    fixed_need = [0] * len(present)
    for request in enabled:
        if request.pinned_gpu is not None and request.pinned_gpu in position:
            need = need_of(request, reserve_mb)
            fixed[position[request.pinned_gpu]] += max(demand_mb(request), need)
            fixed_need[position[request.pinned_gpu]] += need
    inventory = Inventory(
        gpus=tuple(present),
        caps=tuple(g.vram_total_mb for g in present),
        fixed=tuple(fixed),
        fixed_need=tuple(fixed_need),
        reserve_mb=max(0, reserve_mb),
    )

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
