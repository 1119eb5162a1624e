"""The rule strategies: vram_based, latency_optimized and isolation_first.

Each builds its items (which GPUs a service may go to, in tiers of preference), places
them greedily by its rule, and when that overloads a GPU while a fit exists, rearranges
them in the rule's own order of preference (`repair`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from gpuconfig.domain import Gpu, ServiceRequest, gpu_label
from gpuconfig.strategies.budget import Budget, BudgetExhausted, Cap
from gpuconfig.strategies.inventory import Inventory, Item, by_size, is_flexible, shrinkable
from gpuconfig.strategies.packing import may_fit, pack

# plain packing search takes over (a share of the budget, so that one is left for it).
_RULE_ORDER_SHARE = 0.3


# --- GPU ranking -----------------------------------------------------------------------


def _capability(gpu: Gpu) -> tuple[int, ...]:
    """Compute capability "8.6" -> (8, 6); unknown or unparsable sorts lowest."""
    try:
        return tuple(int(part) for part in (gpu.compute_capability or "").split("."))
    except ValueError:
        return (-1,)


def fastest_gpu(gpus: Iterable[Gpu]) -> Gpu:
    """The GPU latency-optimized puts the critical path on.

    Highest compute capability first, because it is what detection reports and it tracks
    the architecture generation; within a generation the card with more VRAM is the
    bigger die with more SMs and memory bandwidth; then the lower index, for determinism.
    """
    return min(gpus, key=lambda g: (_negated(_capability(g)), -g.vram_total_mb, g.index))


def largest_gpu(gpus: Iterable[Gpu]) -> Gpu:
    """The GPU isolation-first dedicates to the LLM: most VRAM, then fastest, then lowest index."""
    return min(gpus, key=lambda g: (-g.vram_total_mb, _negated(_capability(g)), g.index))


def _negated(values: tuple[int, ...]) -> tuple[int, ...]:
    """Negate a version tuple so that `min` picks the highest version."""
    return tuple(-v for v in values)


def vram_based_items(inventory: Inventory, movable: list[ServiceRequest]) -> list[Item]:
    """Every GPU the service may run on is equally allowed; largest service first."""
    return [
        inventory.item(r, dict.fromkeys(inventory.open_to(r.service), 0)) for r in by_size(movable)
    ]


def _pick(inventory: Inventory, rank: Callable[[Iterable[Gpu]], Gpu], positions: list[int]) -> int:
    """The position of the GPU `rank` picks among `positions`."""
    chosen = rank(inventory.gpus[p] for p in positions)
    return next(p for p in positions if inventory.gpus[p].index == chosen.index)


def latency_items(
    inventory: Inventory, movable: list[ServiceRequest], notes: list[str]
) -> list[Item]:
    """LLM and critical services on the fastest GPU; the rest elsewhere, fastest as fallback.

    With GPU hosts: a critical service on the fastest GPU of the hosts that define it; the
    rest keep off every GPU a critical service is given (and off the fastest of all), on
    the GPUs of their hosts, those GPUs as the fallback."""
    fast_all = _pick(inventory, fastest_gpu, list(inventory.positions))
    if len(inventory.gpus) == 1:
        only = inventory.gpus[fast_all]
        notes.append(
            f"Only one GPU detected: every service runs on {gpu_label(only.index, only.host)}."
        )
    critical = [r for r in movable if r.service.role in ("llm", "critical")]
    rest = [r for r in movable if r.service.role not in ("llm", "critical")]
    fast_of = {
        r.service.name: _pick(inventory, fastest_gpu, inventory.open_to(r.service))
        for r in critical
    }
    fast = {fast_all, *fast_of.values()}

    def rest_tiers(request: ServiceRequest) -> dict[int, int]:
        open_ = inventory.open_to(request.service)
        others = [p for p in open_ if p not in fast]
        if not others:
            return dict.fromkeys(open_, 0)
        return dict.fromkeys(others, 0) | {p: 1 for p in open_ if p in fast}

    # Critical services first: they have no choice, and the rest then sees the real
    # free memory of the fastest GPU when it needs it as a fallback.
    return [inventory.item(r, {fast_of[r.service.name]: 0}) for r in by_size(critical)] + [
        inventory.item(r, rest_tiers(r)) for r in by_size(rest)
    ]


def isolation_items(
    inventory: Inventory, enabled: list[ServiceRequest], notes: list[str]
) -> list[Item]:
    """LLM services alone on the largest GPU; everything else on the remaining GPUs.

    With GPU hosts: an LLM on the largest GPU of the hosts that define it; the others off
    every GPU an LLM is given or pinned to, on the GPUs of their hosts (sharing one with an
    LLM only when their hosts have no other)."""
    gpus = inventory.gpus
    position = {g.index: p for p, g in enumerate(gpus)}
    movable = [r for r in enabled if r.pinned_gpu is None]
    llms = [r for r in movable if r.service.role == "llm"]
    rest = [r for r in movable if r.service.role != "llm"]
    if len(gpus) == 1:
        notes.append(
            "Only one GPU detected: the LLM cannot be isolated and shares "
            f"{gpu_label(gpus[0].index, gpus[0].host)} "
            "with every other service."
        )
        return [
            inventory.item(r, dict.fromkeys(inventory.open_to(r.service), 0))
            for r in by_size(movable)
        ]

    big_of = {
        r.service.name: _pick(inventory, largest_gpu, inventory.open_to(r.service)) for r in llms
    }
    # GPUs holding an LLM: the largest one of each LLM's hosts (the largest of all without
    # hosts) and those that an LLM is pinned to. The other services stay off all of them.
    llm_gpus = set(big_of.values())
    llm_gpus |= {
        position[r.pinned_gpu]
        for r in enabled
        if r.service.role == "llm" and r.pinned_gpu is not None and r.pinned_gpu in position
    }
    if not llm_gpus:
        notes.append("No LLM service is enabled: nothing to isolate, services use every GPU.")
    shared = [p for p in inventory.positions if p not in llm_gpus]
    if not shared:
        notes.append("Every GPU holds an LLM: the other services share them.")
        shared = list(inventory.positions)
    for request in enabled:
        if (
            request.service.role != "llm"
            and request.pinned_gpu is not None
            and request.pinned_gpu in position
            and position[request.pinned_gpu] in llm_gpus
            and len(shared) < len(gpus)
        ):
            notes.append(
                f"{request.service.name} is pinned to "
                f"{gpu_label(request.pinned_gpu, gpus[position[request.pinned_gpu]].host)}, "
                "which it shares with the LLM."
            )

    def shared_tiers(request: ServiceRequest) -> dict[int, int]:
        open_ = inventory.open_to(request.service)
        mine = [p for p in open_ if p in shared]
        if mine:
            return dict.fromkeys(mine, 0)
        notes.append(
            f"Every GPU of the hosts that define {request.service.name} holds an LLM: "
            "it shares one with the LLM."
        )
        return dict.fromkeys(open_, 0)

    return [inventory.item(r, {big_of[r.service.name]: 0}) for r in by_size(llms)] + [
        inventory.item(r, shared_tiers(r)) for r in by_size(rest)
    ]


# --- rule-based placement (vram_based, latency_optimized, isolation_first) --------------


def _rule_order(item: Item, caps: Sequence[int], loads: Sequence[int]) -> list[int]:
    """The item's GPUs in the rule's order: best tier, most free MB, bigger card, lower index."""
    # Positions follow GPU index order, so the position breaks the last tie like the index.
    return sorted(item.tiers, key=lambda p: (item.tiers[p], loads[p] - caps[p], -caps[p], p))


def place_by_rule(
    inventory: Inventory, items: list[Item], notes: list[str], budget: Budget
) -> list[int]:
    """The rule's greedy placement, or the nearest one in its order that fits.

    Greedy: each item in turn goes to the first GPU in `_rule_order` where it fits, or
    when it fits nowhere, to the first GPU in that order (the most free MB of its
    preferred tier). Among candidates of one tier this is the design's "most free MB"
    rule; note that it evens out free megabytes, not utilization (that is balanced's job).
    When that overloads a GPU, `_repair` looks for a placement that fits with every
    service at its full demand; failing that, the greedy placement is kept if it fits
    with adjustable budgets at their least (the validator then shrinks them), and
    otherwise `_repair` looks for a placement that fits so.
    """
    caps = inventory.caps
    loads = list(inventory.fixed)
    choice: list[int] = []
    for item in items:
        order = _rule_order(item, caps, loads)
        fitting = [p for p in order if loads[p] + item.demand <= caps[p]]
        p = fitting[0] if fitting else order[0]
        loads[p] += item.demand
        choice.append(p)
    if not any(loads[p] > caps[p] for p in set(choice)):
        return choice  # whatever is over capacity, only pinned services put it there

    better = _repair(inventory, items, notes, budget, flexible=False)
    if better is not None:
        return better
    if not is_flexible(inventory, items):
        return choice
    need_loads = list(inventory.fixed_need)
    for item, p in zip(items, choice, strict=True):
        need_loads[p] += item.need
    if not any(need_loads[p] > caps[p] for p in set(choice)):
        return choice  # fits once the validator shrinks the adjustable budgets
    better = _repair(inventory, items, notes, budget, flexible=True)
    return choice if better is None else better


def _repair(
    inventory: Inventory,
    items: list[Item],
    notes: list[str],
    budget: Budget,
    *,
    flexible: bool,
) -> list[int] | None:
    """A placement within capacity, nearest to the rule's in its order, and a note; or
    None when none exists (or none was found in time). `flexible`: services count at
    their least (`Item.need`) instead of their full demand."""
    caps = inventory.caps
    fixed = inventory.fixed_need if flexible else inventory.fixed
    better = None
    in_rule_order = True
    try:
        better = _search_fit(
            inventory, items, Cap(budget, int(budget.total * _RULE_ORDER_SHARE)), flexible
        )
    except BudgetExhausted:
        # The search in the rule's order is the one that explains itself best, but it is
        # slow to disprove; the packing search finds a fit, when one exists, far sooner.
        in_rule_order = False
        allowed = [sorted(item.tiers) for item in items]
        free = [cap - load for cap, load in zip(caps, fixed, strict=True)]
        demands = [item.need if flexible else item.demand for item in items]
        try:
            better = pack(free, demands, budget, allowed)
        except BudgetExhausted:
            better = None
    if better is None:
        return None
    pinned_over = [inventory.gpus[p] for p in inventory.positions if fixed[p] > caps[p]]
    how = (
        "in the rule's order of preference"
        if in_rule_order
        else "away from the rule's order of preference (no fit in that order was found in time)"
    )
    if pinned_over:
        result = (
            "so that every service the strategy placed fits; "
            f"{_gpu_list(pinned_over)} stays over capacity from pinned "
            "services alone"
        )
    else:
        result = "so that every GPU stays within capacity"
    if flexible:
        result += (
            f", with the budget of {shrinkable(items)} adjusted down to what is left "
            "(never below its minimum): at full estimates nothing fits"
        )
    notes.append(f"The plain rule overloaded a GPU; services were rearranged, {how}, {result}.")
    return better


def _gpu_list(gpus: Sequence[Gpu]) -> str:
    """ "GPU 0, 1" for local GPUs (as ever); each by its `gpu_label` once one is another
    host's ("GPU 0, gpu-box-2 / GPU 1")."""
    labels = [gpu_label(gpu.index, gpu.host) for gpu in gpus]
    if all(label == gpu_label(gpu.index) for label, gpu in zip(labels, gpus, strict=True)):
        return f"GPU {', '.join(str(gpu.index) for gpu in gpus)}"
    return ", ".join(labels)


def _search_fit(
    inventory: Inventory, items: list[Item], budget: Cap, flexible: bool = False
) -> list[int] | None:
    """Depth-first search for a placement within capacity, trying GPUs in the rule's order.

    Returns the first placement found (so the closest to the greedy one in the rule's
    lexicographic order of choices), or None when there is none. Raises
    `BudgetExhausted` when the budget runs out first. `flexible`: whether a service fits
    is asked of its least (`Item.need`), while the rule's order still sees full demands.
    """
    caps = inventory.caps
    loads = list(inventory.fixed)  # what the rule's "most free MB" sees
    used = list(inventory.fixed_need if flexible else inventory.fixed)  # what must fit
    sizes = [item.need if flexible else item.demand for item in items]
    n = len(items)
    # GPUs that look the same to every item (same tier for each item, same size) are
    # interchangeable while their loads are equal: trying one of them is enough.
    signatures = [tuple(item.tiers.get(p) for item in items) for p in inventory.positions]
    kind = [signatures.index(signature) for signature in signatures]  # small ints hash fast
    # The sizes still to place from item k on, largest first, for the bound.
    pending = [sorted(sizes[k:], reverse=True) for k in range(n + 1)]
    choice = [0] * n

    def extend(k: int) -> bool:
        if k == n:
            return True
        budget.spend()
        if not may_fit(pending[k], 0, [c - u for c, u in zip(caps, used, strict=True)]):
            return False
        item, size = items[k], sizes[k]
        tried: set[tuple[int, int, int, int]] = set()
        for p in _rule_order(item, caps, loads):
            if used[p] + size > caps[p]:
                continue
            key = (kind[p], caps[p], loads[p], used[p])
            if key in tried:
                continue
            tried.add(key)
            loads[p] += item.demand
            used[p] += size
            choice[k] = p
            if extend(k + 1):
                return True
            loads[p] -= item.demand
            used[p] -= size
        return False

    return choice if extend(0) else None
