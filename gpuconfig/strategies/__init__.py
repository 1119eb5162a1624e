"""The five assignment strategies: which GPU each enabled service goes to.

Pure functions over the dataclasses of `gpuconfig.domain`: no Django, no I/O.

Shared rules for the automatic strategies (everything but manual):

* Only present GPUs are candidates; disabled services are left out entirely.
* A pinned service stays on its pin (even a GPU that is not detected: the validator
  reports that) and its demand counts as fixed load on that GPU.
* Capacity is a GPU's total VRAM; a service's demand is `domain.demand_mb`.
* Never over capacity when a placement within capacity exists: when a strategy's rule
  overloads a GPU, a search looks for the nearest placement, in the rule's own order of
  preference, that fits (and, if that search runs out of time, for any placement that
  fits). When none fits the rule's placement is kept and the fewest services that do not
  fit are listed in `Plan.over_capacity`: every service still gets a GPU.
* A service with an adjustable budget (`domain.adjustable`) fits where its minimum
  (`domain.least_demand_mb`) plus the validator's reserve fits (`_need`). The rule's
  order and balanced's utilization see its full estimate; a fit at full estimates is
  preferred, then one with such budgets shrunk, never below their minimum.
* The work is bounded by a time budget (`time_budget_ms`), counted in search steps so
  that equal inputs always give equal plans.

The strategies:

* manual: every enabled service must be pinned; nothing moves.
* vram_based (the design's rule): largest demand first, each onto the GPU with the most
  free MB. This evens out free megabytes, not utilization: a 4 GB card with 1 GB free
  looks fuller than an 80 GB card with 2 GB free. Balanced evens utilization instead.
* latency_optimized: "llm" and "critical" services on the fastest GPU (`fastest_gpu`);
  the rest by the vram_based rule on the other GPUs, falling back to the fastest one when
  they fit nowhere else or there is no other GPU.
* isolation_first: "llm" services alone on the largest GPU (`largest_gpu`); the rest by
  the vram_based rule on the GPUs no LLM is on. With one GPU everything shares it.
* balanced: the proven least highest utilization when the budget allows, else the best
  plan found with a proven bound (`Plan.optimality`); then as even as possible. When
  nothing fits, the least harm (`_balance`).
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from gpuconfig.domain import (
    Gpu,
    Optimality,
    Plan,
    ServiceRequest,
    StrategyName,
    adjustable,
    demand_mb,
    least_demand_mb,
)

__all__ = [
    "DEFAULT_TIME_BUDGET_MS",
    "StrategyError",
    "fastest_gpu",
    "largest_gpu",
    "plan",
]

# The planner's default time budget (setting GPUCONFIG_PLANNER_TIME_BUDGET_MS).
DEFAULT_TIME_BUDGET_MS = 250
# The budget is spent in search nodes, not read off the clock, so that a plan does not
# depend on how busy the machine is. Calibrated on a slow shared 2-core machine
# (bench/bench_strategies.py): one node of the packing search costs 5-20 us there,
# depending on the instance and the load, so this many nodes per millisecond keeps the
# worst case inside the budget.
_NODES_PER_MS = 40
# The clock only guards against a machine far slower than that: past this share of the
# budget the search stops anyway (then, and only then, the plan may depend on timing).
_DEADLINE_FACTOR = 0.9
# Nodes the rule strategies' search in their own order of preference may take before the
# plain packing search takes over (a share of the budget, so that one is left for it).
_RULE_ORDER_SHARE = 0.3
# Nodes one candidate choice of the services that do not fit may cost (least-harm search).
_OVERFLOW_CANDIDATE_NODES = 2_000
# Below this relative gap between the best plan and the bound, the search asks straight
# away for any plan strictly better than the best; above it, it bisects the gap.
_BISECT_MIN_GAP = 0.002
# A bisection step may spend at most 1/_STEP_SHARE of what is left (at least
# _MIN_STEP_NODES): a target that is hard to decide must not eat the whole budget.
_STEP_SHARE = 3
_MIN_STEP_NODES = 500
# Per-service cap on local-search improvements; each one strictly improves the objective,
# so this only guards against pathological slow convergence.
_LOCAL_SEARCH_STEPS_PER_SERVICE = 50


class StrategyError(ValueError):
    """The strategy cannot produce a plan for this input (the message says why)."""


class _BudgetExhausted(Exception):
    """A search used up its budget."""


class _Budget:
    """The work one `plan()` call may do: search nodes, plus a clock as a safety net."""

    def __init__(self, time_budget_ms: int) -> None:
        self.nodes_left = max(1, time_budget_ms) * _NODES_PER_MS
        self.total = self.nodes_left
        self.deadline = time.perf_counter() + max(1, time_budget_ms) * _DEADLINE_FACTOR / 1000

    def spend(self) -> None:
        """Count one node; raise `_BudgetExhausted` when the budget is spent."""
        self.nodes_left -= 1
        if self.nodes_left < 0 or (
            self.nodes_left & 1023 == 0 and time.perf_counter() > self.deadline
        ):
            self.nodes_left = -1
            raise _BudgetExhausted


class _Cap:
    """A sub-budget: at most `nodes` of the parent's nodes."""

    def __init__(self, parent: _Budget, nodes: int) -> None:
        self.parent = parent
        self.nodes_left = nodes

    def spend(self) -> None:
        """Count one node against both this cap and the parent budget."""
        self.nodes_left -= 1
        if self.nodes_left < 0:
            raise _BudgetExhausted
        self.parent.spend()


@dataclass(frozen=True)
class _Item:
    """A service the strategy places: its demand and the GPUs it may go to.

    `tiers` maps GPU position -> preference tier (0 = preferred). A strategy's rule picks,
    among the GPUs of the best tier where the service fits, the one with the most free MB.
    `need` is the least it can run with (`_need`): below `demand` for a service whose
    budget the validator may shrink.
    """

    name: str
    demand: int
    tiers: dict[int, int]
    need: int


@dataclass(frozen=True)
class _Inventory:
    """Present GPUs by position (sorted by index) and the load pinned services put on them."""

    gpus: tuple[Gpu, ...]
    caps: tuple[int, ...]
    fixed: tuple[int, ...]
    # The pinned load with adjustable budgets at their least (`_need`), and the reserve
    # the validator keeps free beside an adjustable budget.
    fixed_need: tuple[int, ...] = ()
    reserve_mb: int = 0

    def item(self, request: ServiceRequest, tiers: dict[int, int]) -> _Item:
        """The request as an item with these tiers."""
        need = _need(request, self.reserve_mb)
        return _Item(request.service.name, max(demand_mb(request), need), tiers, need)

    @property
    def positions(self) -> range:
        """All GPU positions."""
        return range(len(self.gpus))


def plan(
    strategy: StrategyName | str,
    gpus: Sequence[Gpu],
    requests: Sequence[ServiceRequest],
    *,
    time_budget_ms: int = DEFAULT_TIME_BUDGET_MS,
    reserve_mb: int = 0,
) -> Plan:
    """Assign every enabled service to a GPU with the given strategy.

    `reserve_mb` is the VRAM reserve the validator keeps free on a GPU where it sizes an
    adjustable budget (`validation.evaluate`); the planner counts it beside such services
    when it asks whether they fit at their least (`_need`).

    Raises `StrategyError` for input no strategy can honour: duplicate service names or
    GPU indexes, a missing or negative demand, a present GPU without VRAM, an unpinned
    enabled service under the manual strategy, or services to place while no GPU is present.
    """
    try:
        strategy = StrategyName(strategy)
    except ValueError:
        raise StrategyError(f"Unknown strategy {strategy!r}") from None
    enabled = _check_requests(requests)

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

    present = _check_gpus(gpus)
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
            need = _need(request, reserve_mb)
            fixed[position[request.pinned_gpu]] += max(demand_mb(request), need)
            fixed_need[position[request.pinned_gpu]] += need
    inventory = _Inventory(
        gpus=tuple(present),
        caps=tuple(g.vram_total_mb for g in present),
        fixed=tuple(fixed),
        fixed_need=tuple(fixed_need),
        reserve_mb=max(0, reserve_mb),
    )

    budget = _Budget(time_budget_ms)
    notes: list[str] = []
    optimality: Optimality | None = None
    if strategy is StrategyName.BALANCED:
        items = _vram_based_items(inventory, movable)
        choice, over, optimality = _balance_flexibly(inventory, items, notes, budget)
    else:
        if strategy is StrategyName.VRAM_BASED:
            items = _vram_based_items(inventory, movable)
        elif strategy is StrategyName.LATENCY_OPTIMIZED:
            items = _latency_items(inventory, movable, notes)
        else:
            items = _isolation_items(inventory, enabled, notes)
        choice = _place_by_rule(inventory, items, notes, budget)
        over = _over_capacity(inventory, items, choice)

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


# --- input checks --------------------------------------------------------------------


def _check_requests(requests: Sequence[ServiceRequest]) -> list[ServiceRequest]:
    """Reject ambiguous requests; return the enabled ones in order."""
    seen: set[str] = set()
    for request in requests:
        name = request.service.name
        if name in seen:
            raise StrategyError(f"Service {name} is listed twice")
        seen.add(name)
    enabled = [r for r in requests if r.enabled]
    for request in enabled:
        # The types say int, but a service read from elsewhere (an old saved row, a
        # hand-built request) may lack the figure; say so instead of a TypeError below.
        demand: object = demand_mb(request)
        if not isinstance(demand, int) or isinstance(demand, bool):
            raise StrategyError(
                f"{request.service.name} has no VRAM figure: set its estimate in MB "
                "(label gpuconfig.vram_estimate_mb) or a budget"
            )
        if demand < 0:
            raise StrategyError(f"{request.service.name} has a negative VRAM demand")
    return enabled


def _check_gpus(gpus: Sequence[Gpu]) -> list[Gpu]:
    """Present GPUs sorted by index; reject duplicate indexes and empty cards."""
    present = sorted((g for g in gpus if g.present), key=lambda g: g.index)
    for previous, gpu in itertools.pairwise(present):
        if previous.index == gpu.index:
            raise StrategyError(f"GPU index {gpu.index} is reported twice")
    for gpu in present:
        if gpu.vram_total_mb <= 0:
            raise StrategyError(f"GPU {gpu.index} reports no VRAM")
    return present


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


# --- building the items of each strategy --------------------------------------------


def _need(request: ServiceRequest, reserve_mb: int) -> int:
    """The least VRAM a service takes on a GPU, for the question whether a fit exists.

    A service with an adjustable budget (`domain.adjustable`) needs only its minimum
    (`domain.least_demand_mb`) plus the reserve the validator keeps free beside such a
    budget (counted per service: two of them on one GPU are counted one reserve too
    high, which can only make the planner cautious); any other service its demand.
    """
    if adjustable(request):
        return least_demand_mb(request) + max(0, reserve_mb)
    return demand_mb(request)


def _by_size(requests: Iterable[ServiceRequest]) -> list[ServiceRequest]:
    """Largest demand first; equal demands keep request order (the sort is stable)."""
    return sorted(requests, key=lambda r: -demand_mb(r))


def _vram_based_items(inventory: _Inventory, movable: list[ServiceRequest]) -> list[_Item]:
    """Every GPU is equally allowed; largest service first."""
    everywhere = dict.fromkeys(inventory.positions, 0)
    return [inventory.item(r, everywhere) for r in _by_size(movable)]


def _latency_items(
    inventory: _Inventory, movable: list[ServiceRequest], notes: list[str]
) -> list[_Item]:
    """LLM and critical services on the fastest GPU; the rest elsewhere, fastest as fallback."""
    fast = inventory.gpus.index(fastest_gpu(inventory.gpus))
    others = [p for p in inventory.positions if p != fast]
    if others:
        rest_tiers = dict.fromkeys(others, 0) | {fast: 1}
    else:
        rest_tiers = {fast: 0}
        notes.append(
            f"Only one GPU detected: every service runs on GPU {inventory.gpus[fast].index}."
        )
    critical = [r for r in movable if r.service.role in ("llm", "critical")]
    rest = [r for r in movable if r.service.role not in ("llm", "critical")]
    # Critical services first: they have no choice, and the rest then sees the real
    # free memory of the fastest GPU when it needs it as a fallback.
    return [inventory.item(r, {fast: 0}) for r in _by_size(critical)] + [
        inventory.item(r, rest_tiers) for r in _by_size(rest)
    ]


def _isolation_items(
    inventory: _Inventory, enabled: list[ServiceRequest], notes: list[str]
) -> list[_Item]:
    """LLM services alone on the largest GPU; everything else on the remaining GPUs."""
    gpus = inventory.gpus
    position = {g.index: p for p, g in enumerate(gpus)}
    movable = [r for r in enabled if r.pinned_gpu is None]
    llms = [r for r in movable if r.service.role == "llm"]
    rest = [r for r in movable if r.service.role != "llm"]
    everywhere = dict.fromkeys(inventory.positions, 0)
    if len(gpus) == 1:
        notes.append(
            f"Only one GPU detected: the LLM cannot be isolated and shares GPU {gpus[0].index} "
            "with every other service."
        )
        return [inventory.item(r, everywhere) for r in _by_size(movable)]

    big = position[largest_gpu(gpus).index]
    # GPUs holding an LLM: the largest one (if an LLM is to be placed) and those that
    # an LLM is pinned to. The other services stay off all of them.
    llm_gpus = {big} if llms else set()
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
                f"{request.service.name} is pinned to GPU {request.pinned_gpu}, "
                "which it shares with the LLM."
            )
    shared_tiers = dict.fromkeys(shared, 0)
    return [inventory.item(r, {big: 0}) for r in _by_size(llms)] + [
        inventory.item(r, shared_tiers) for r in _by_size(rest)
    ]


# --- rule-based placement (vram_based, latency_optimized, isolation_first) --------------


def _rule_order(item: _Item, caps: Sequence[int], loads: Sequence[int]) -> list[int]:
    """The item's GPUs in the rule's order: best tier, most free MB, bigger card, lower index."""
    # Positions follow GPU index order, so the position breaks the last tie like the index.
    return sorted(item.tiers, key=lambda p: (item.tiers[p], loads[p] - caps[p], -caps[p], p))


def _place_by_rule(
    inventory: _Inventory, items: list[_Item], notes: list[str], budget: _Budget
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
    if not _is_flexible(inventory, items):
        return choice
    need_loads = list(inventory.fixed_need)
    for item, p in zip(items, choice, strict=True):
        need_loads[p] += item.need
    if not any(need_loads[p] > caps[p] for p in set(choice)):
        return choice  # fits once the validator shrinks the adjustable budgets
    better = _repair(inventory, items, notes, budget, flexible=True)
    return choice if better is None else better


def _is_flexible(inventory: _Inventory, items: Sequence[_Item]) -> bool:
    """Whether some service could take less than its demand (an adjustable budget)."""
    return inventory.fixed_need != inventory.fixed or any(i.need != i.demand for i in items)


def _shrinkable(items: Sequence[_Item]) -> str:
    """The names of the placed services whose budgets may shrink, for the notes."""
    return ", ".join(item.name for item in items if item.need < item.demand)


def _repair(
    inventory: _Inventory,
    items: list[_Item],
    notes: list[str],
    budget: _Budget,
    *,
    flexible: bool,
) -> list[int] | None:
    """A placement within capacity, nearest to the rule's in its order, and a note; or
    None when none exists (or none was found in time). `flexible`: services count at
    their least (`_Item.need`) instead of their full demand."""
    caps = inventory.caps
    fixed = inventory.fixed_need if flexible else inventory.fixed
    better = None
    in_rule_order = True
    try:
        better = _search_fit(
            inventory, items, _Cap(budget, int(budget.total * _RULE_ORDER_SHARE)), flexible
        )
    except _BudgetExhausted:
        # The search in the rule's order is the one that explains itself best, but it is
        # slow to disprove; the packing search finds a fit, when one exists, far sooner.
        in_rule_order = False
        allowed = [sorted(item.tiers) for item in items]
        free = [cap - load for cap, load in zip(caps, fixed, strict=True)]
        demands = [item.need if flexible else item.demand for item in items]
        try:
            better = _pack(free, demands, budget, allowed)
        except _BudgetExhausted:
            better = None
    if better is None:
        return None
    pinned_over = [inventory.gpus[p].index for p in inventory.positions if fixed[p] > caps[p]]
    how = (
        "in the rule's order of preference"
        if in_rule_order
        else "away from the rule's order of preference (no fit in that order was found in time)"
    )
    if pinned_over:
        result = (
            "so that every service the strategy placed fits; "
            f"GPU {', '.join(map(str, pinned_over))} stays over capacity from pinned "
            "services alone"
        )
    else:
        result = "so that every GPU stays within capacity"
    if flexible:
        result += (
            f", with the budget of {_shrinkable(items)} adjusted down to what is left "
            "(never below its minimum): at full estimates nothing fits"
        )
    notes.append(f"The plain rule overloaded a GPU; services were rearranged, {how}, {result}.")
    return better


def _search_fit(
    inventory: _Inventory, items: list[_Item], budget: _Cap, flexible: bool = False
) -> list[int] | None:
    """Depth-first search for a placement within capacity, trying GPUs in the rule's order.

    Returns the first placement found (so the closest to the greedy one in the rule's
    lexicographic order of choices), or None when there is none. Raises
    `_BudgetExhausted` when the budget runs out first. `flexible`: whether a service fits
    is asked of its least (`_Item.need`), while the rule's order still sees full demands.
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
        if not _may_fit(pending[k], 0, [c - u for c, u in zip(caps, used, strict=True)]):
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


def _over_capacity(inventory: _Inventory, items: list[_Item], choice: list[int]) -> set[str]:
    """The fewest placed items whose absence would leave their GPU within capacity.

    Every item counts at its least (`_Item.need`): a GPU that fits once adjustable
    budgets shrink is within capacity. On a GPU that its pinned services alone overload,
    every placed item is listed. On any other overloaded GPU, the fewest items whose
    removal makes the rest fit (the largest ones reach the excess with the fewest), and
    among as many, the least MB.
    """
    over: set[str] = set()
    for p in inventory.positions:
        here = [item for item, q in zip(items, choice, strict=True) if q == p]
        load = inventory.fixed_need[p] + sum(item.need for item in here)
        if load <= inventory.caps[p]:
            continue
        if inventory.fixed_need[p] > inventory.caps[p]:
            over |= {item.name for item in here}
            continue
        # As the validator sees it: the other services get their demand, and services with
        # adjustable budgets share what is left, the smallest minimums first. When that
        # alone is what does not fit, the adjustable services left without room are listed.
        flexible = sorted((item for item in here if item.need < item.demand), key=_by_need)
        room = (
            inventory.caps[p]
            - inventory.fixed_need[p]
            - sum(item.need for item in here if item.need == item.demand)
        )
        if flexible and room >= 0:
            for item in flexible:
                if item.need <= room:
                    room -= item.need
                else:
                    over.add(item.name)
            continue
        demands = [item.need for item in here]
        excess = load - inventory.caps[p]
        count = _fewest_reaching(demands, excess)
        for k in _least_overflow(demands, count, excess, _always)[0]:
            over.add(here[k].name)
    return over


def _by_need(item: _Item) -> int:
    return item.need


def _always(_: set[int]) -> bool:
    return True


def _fewest_reaching(demands: Sequence[int], excess: int) -> int:
    """How many demands, at the fewest, add up to at least `excess` (the largest do)."""
    total = 0
    for count, demand in enumerate(sorted(demands, reverse=True), start=1):
        total += demand
        if total >= excess:
            return count
    return len(demands)


def _least_overflow(
    demands: Sequence[int], count: int, excess: int, rest_fits: Callable[[set[int]], bool]
) -> tuple[set[int], bool]:
    """Indexes of `count` demands adding up to >= `excess` MB, the least MB found.

    `rest_fits(chosen)` says whether what is left without `chosen` can be placed; it must
    hold for the `count` largest demands, the start. With few demands every set of that
    size is tried, from the least total MB up; otherwise each member is swapped for the
    smallest demand that still works. Returns the set and whether every set of that size
    was tried. Raises `_BudgetExhausted` only through `rest_fits`.
    """
    by_size = sorted(range(len(demands)), key=lambda k: (-demands[k], k))
    chosen = set(by_size[:count])
    if math.comb(len(demands), count) <= 2_000:
        candidates = sorted(
            itertools.combinations(range(len(demands)), count),
            key=lambda c: (sum(demands[k] for k in c), c),
        )
        for candidate in candidates:
            if sum(demands[k] for k in candidate) >= excess and rest_fits(set(candidate)):
                return set(candidate), True
        return chosen, True
    # Too many sets to try: improve one member at a time, largest first.
    for member in sorted(chosen, key=lambda k: (-demands[k], k)):
        others = sum(demands[k] for k in chosen) - demands[member]
        smaller = sorted(
            (k for k in range(len(demands)) if k not in chosen and demands[k] < demands[member]),
            key=lambda k: (demands[k], k),
        )
        for k in smaller:
            if others + demands[k] < excess:
                continue
            trial = (chosen - {member}) | {k}
            if rest_fits(trial):
                chosen = trial
                break
    return chosen, False


# --- packing search (shared) --------------------------------------------------------------


def _pack(
    free: Sequence[int],
    demands: Sequence[int],
    budget: _Budget | _Cap,
    allowed: Sequence[Sequence[int]] | None = None,
) -> list[int] | None:
    """A placement of `demands` into GPUs with `free` MB each, or None when there is none.

    Bin packing by depth-first search: largest demand first, each onto the GPU where it
    fits most tightly (best fit, so the first leaf is the classic best-fit-decreasing
    plan). Pruned by `_may_fit`; GPUs with the same free MB (and, with `allowed`, open to
    the same services) are tried once; and a demand that fills a GPU exactly goes there
    and nowhere else (any packing can swap that GPU's contents for it). Exhaustive, hence
    a proof when it answers None; raises `_BudgetExhausted` when the budget runs out.
    """
    n = len(demands)
    order = sorted(range(n), key=lambda k: (-demands[k], k))
    sizes = [demands[k] for k in order]
    positions = range(len(free))
    options = [list(allowed[k]) for k in order] if allowed is not None else None
    # GPUs open to exactly the same services are interchangeable while equally free.
    if options is not None:
        signatures = [tuple(p in option for option in options) for p in positions]
        kind = [signatures.index(signature) for signature in signatures]
    else:
        kind = [0] * len(free)
    rest = [0] * (n + 1)
    for k in range(n - 1, -1, -1):
        rest[k] = rest[k + 1] + sizes[k]
    # Cheap tries first: at loose targets spreading (worst fit) often succeeds where best
    # fit's first path paints itself into a corner and the search thrashes below it.
    for spread in (True,):
        greedy = _greedy_pack(free, sizes, options, spread=spread)
        if greedy is not None:
            return _unsorted(greedy, order)
    room = list(free)
    choice = [0] * n

    def place(k: int) -> bool:
        if k == n:
            return True
        budget.spend()
        if not _may_fit(sizes, k, room, rest[k]):
            return False
        size = sizes[k]
        candidates = options[k] if options is not None else positions
        tried: set[tuple[int, int]] = set()
        for left, p in sorted((room[p], p) for p in candidates if room[p] >= size):
            key = (left, kind[p])
            if key in tried:
                continue
            tried.add(key)
            room[p] -= size
            choice[k] = p
            if place(k + 1):
                return True
            room[p] += size
            if left == size and options is None:
                return False  # the exact fit failed, so every other choice fails too
        return False

    if not place(0):
        return None
    return _unsorted(choice, order)


def _unsorted(choice: Sequence[int], order: Sequence[int]) -> list[int]:
    """Back from largest-first order to the caller's order."""
    result = [0] * len(order)
    for k, item in enumerate(order):
        result[item] = choice[k]
    return result


def _greedy_pack(
    free: Sequence[int],
    sizes: Sequence[int],
    options: Sequence[Sequence[int]] | None,
    *,
    spread: bool,
) -> list[int] | None:
    """Largest first onto the roomiest GPU (`spread`) or the tightest that fits; no search."""
    room = list(free)
    choice = []
    for k, size in enumerate(sizes):
        candidates = [p for p in (options[k] if options else range(len(room))) if room[p] >= size]
        if not candidates:
            return None
        if spread:
            p = min(candidates, key=lambda q: (-room[q], q))
        else:
            p = min(candidates, key=lambda q: (room[q], q))
        room[p] -= size
        choice.append(p)
    return choice


def _may_fit(
    demands: Sequence[int], start: int, free: Sequence[int], rest: int | None = None
) -> bool:
    """False when `demands[start:]` (largest first) certainly cannot be packed into `free`.

    Two relaxations of bin packing. For every j, the demands too big for all but the j
    GPUs with the most free memory must fit, in total, into those j GPUs (with j = all
    GPUs: the total fits). And free memory smaller than the smallest demand is lost.
    `rest` is sum(demands[start:]) when the caller has it at hand.
    """
    n = len(demands)
    if start >= n:
        return True
    order = sorted(free, reverse=True)
    smallest = demands[-1]
    if rest is None:
        rest = sum(demands[start:])
    if rest > sum(f for f in order if f >= smallest):
        return False
    room = 0
    must = 0
    i = start  # walks the demands from the largest down
    count = len(order)
    for j in range(count):
        if order[j] < smallest:
            break
        room += order[j]
        below = order[j + 1] if j + 1 < count else -1
        # Demands larger than the next GPU's free memory can only go to the first j + 1.
        while i < n and demands[i] > below:
            must += demands[i]
            i += 1
        if must > room:
            return False
    return i >= n


# --- balanced ----------------------------------------------------------------------------


def _balance_flexibly(
    inventory: _Inventory, items: list[_Item], notes: list[str], budget: _Budget
) -> tuple[list[int], set[str], Optimality | None]:
    """Balanced with adjustable budgets: `_balance` at full demands, which is what such a
    service would like (and what it gets where there is room), unless that leaves a
    service that does not fit even at its least while a plan exists where every service
    does; then `_balance` at the least (`_Item.need`) of each service.

    What does not fit is judged at the least in both cases: a service whose budget the
    validator shrinks to fit is not listed.
    """
    choice, over, optimality = _balance(inventory, items, budget)
    if not _is_flexible(inventory, items):
        return choice, over, optimality
    if over:
        over = _over_capacity(inventory, items, choice)
        if not over:
            notes.append(
                "At full estimates not every service fits; the budget of "
                f"{_shrinkable(items)} is adjusted down to what is left on its GPU "
                "(never below its minimum), so that everything fits."
            )
    if not over:
        return choice, over, optimality
    # At the least: the items largest first again, as `_balance` expects.
    order = sorted(range(len(items)), key=lambda k: (-items[k].need, k))
    least_items = [
        _Item(items[k].name, items[k].need, items[k].tiers, items[k].need) for k in order
    ]
    least_inventory = _Inventory(
        inventory.gpus, inventory.caps, inventory.fixed_need, inventory.fixed_need, 0
    )
    least_choice, least_over, least_optimality = _balance(least_inventory, least_items, budget)
    if len(least_over) >= len(over):
        return choice, over, optimality
    placed = [0] * len(items)
    for k, p in zip(order, least_choice, strict=True):
        placed[k] = p
    notes.append(
        "At full estimates not every service fits; planned with the budget of "
        f"{_shrinkable(items)} at its minimum, so that "
        + ("every service fits" if not least_over else "as few services as possible do not fit")
        + " (the validator then gives it what is left on its GPU); the utilization "
        "figures count it at that minimum."
    )
    return placed, least_over, least_optimality


def _balance(
    inventory: _Inventory, items: list[_Item], budget: _Budget
) -> tuple[list[int], set[str], Optimality | None]:
    """Balanced: (GPU position per item, names that do not fit, what was proven).

    When everything can fit: the least possible highest utilization (load / capacity),
    proven by `_min_max` when the budget allows; then the rest evened out by
    `_local_search` (leximax: the second highest, and so on, without raising the highest).
    A GPU that its pinned services alone overload is left to them.

    When not everything can fit, the least harm, in this order: the fewest services that
    do not fit (`_fewest_unfit`), and among as many, the least MB of them; then the fewest
    overloaded GPUs (they all go to one GPU, one that pins already overload if there is
    one); then the least highest utilization of what fits, as above.
    """
    caps, fixed = inventory.caps, inventory.fixed
    demands = [item.demand for item in items]  # largest first (`_by_size`)
    usable = [p for p in inventory.positions if fixed[p] <= caps[p]]
    pinned_over = [p for p in inventory.positions if fixed[p] > caps[p]]
    if not usable:
        # Pins alone overload every GPU: nothing placed can fit; spread it thinly.
        loads = list(fixed)
        choice = []
        for d in demands:
            p = min(inventory.positions, key=lambda q: ((loads[q] + d) / caps[q], -caps[q], q))
            loads[p] += d
            choice.append(p)
        return choice, {item.name for item in items}, None

    sub_caps = [caps[p] for p in usable]
    sub_fixed = [fixed[p] for p in usable]
    free = [c - f for c, f in zip(sub_caps, sub_fixed, strict=True)]
    start = _greedy(sub_caps, sub_fixed, demands)
    unfit: set[int] = set()
    unfit_proven = True
    known_fit: dict[int, int] | None = None
    if _value(sub_caps, sub_fixed, demands, start) > 1:
        fit: list[int] | None = None
        try:
            fit = _pack(free, demands, budget)
        except _BudgetExhausted:
            unfit_proven = False
        if fit is not None:
            start = fit
        else:
            unfit, known_fit, unfit_proven = _fewest_unfit(
                free, demands, budget, all_known_unfit=unfit_proven
            )

    placed = [k for k in range(len(items)) if k not in unfit]
    sizes = [demands[k] for k in placed]
    if unfit or known_fit is not None:
        greedy = _greedy(sub_caps, sub_fixed, sizes)
        start = greedy
        if known_fit is not None and _value(sub_caps, sub_fixed, sizes, greedy) > 1:
            start = [known_fit[k] for k in placed]
    else:
        start = [start[k] for k in placed]
    loads = _loads(sub_caps, sub_fixed, sizes, start)
    _local_search(sub_caps, loads, sizes, start)
    best, bound, proven = _min_max(sub_caps, sub_fixed, sizes, start, budget)
    loads = _loads(sub_caps, sub_fixed, sizes, best)
    _local_search(sub_caps, loads, sizes, best)

    choice = [0] * len(items)
    full_loads = list(fixed)
    for k, q in zip(placed, best, strict=True):
        choice[k] = usable[q]
        full_loads[usable[q]] += demands[k]
    if unfit:
        overflow = sum(demands[k] for k in unfit)
        # One GPU takes all that does not fit: one pins overload already, if any.
        targets = pinned_over or list(inventory.positions)
        p = min(targets, key=lambda q: ((full_loads[q] + overflow) / caps[q], -caps[q], q))
        for k in unfit:
            choice[k] = p
    value = _value(sub_caps, sub_fixed, sizes, best)
    optimality = Optimality(
        proven=proven and unfit_proven,
        max_utilization=float(value),
        # Without proof that no fewer services could be left out, there is no bound.
        lower_bound=float(bound) if unfit_proven else 0.0,
    )
    return choice, {items[k].name for k in unfit}, optimality


def _greedy(caps: Sequence[int], fixed: Sequence[int], demands: Sequence[int]) -> list[int]:
    """Largest first, each onto the GPU where its resulting utilization is lowest."""
    loads = list(fixed)
    choice = []
    for d in demands:
        p = min(range(len(caps)), key=lambda q: ((loads[q] + d) / caps[q], -caps[q], q))
        loads[p] += d
        choice.append(p)
    return choice


def _loads(
    caps: Sequence[int], fixed: Sequence[int], demands: Sequence[int], choice: Sequence[int]
) -> list[int]:
    """MB per GPU: the fixed load plus the demands placed there."""
    loads = list(fixed)
    for d, p in zip(demands, choice, strict=True):
        loads[p] += d
    return loads


def _value(
    caps: Sequence[int], fixed: Sequence[int], demands: Sequence[int], choice: Sequence[int]
) -> Fraction:
    """The highest utilization under `choice`, exactly."""
    loads = _loads(caps, fixed, demands, choice)
    return max(Fraction(load, cap) for load, cap in zip(loads, caps, strict=True))


def _fewest_unfit(
    free: Sequence[int], demands: Sequence[int], budget: _Budget, *, all_known_unfit: bool
) -> tuple[set[int], dict[int, int] | None, bool]:
    """The least harm's first two criteria: which demands do not fit into `free`.

    If any k demands fit, the k smallest do (put each smaller one where a chosen one
    was), so the most that fit is found by bisecting k over the smallest demands. Then
    `_least_overflow` picks, among the sets of the other n - k, the one of least MB it
    can. Returns (indexes that do not fit, a placement of the others into `free` when the
    search kept one, whether that set is proven: the fewest, then the least MB).
    """
    n = len(demands)
    # Ties broken opposite to `_least_overflow`'s largest-first order, so that the k
    # smallest here are exactly what is left without its n - k largest.
    ascending = sorted(range(n), key=lambda k: (demands[k], -k))
    room = sum(max(0, f) for f in free)
    high = n - 1 if all_known_unfit else n
    total = 0
    for count, k in enumerate(ascending):
        total += demands[k]
        if total > room:
            high = min(high, count)
            break
    # A start that costs no budget: the most smallest demands best-fit decreasing places.
    low = 0
    fits: dict[int, list[int]] = {0: []}
    lo, hi = 0, high
    while lo < hi:
        middle = (lo + hi + 1) // 2
        greedy = _best_fit(free, [demands[k] for k in ascending[:middle]])
        if greedy is None:
            hi = middle - 1
        else:
            lo = middle
            fits[middle] = greedy
    low = lo
    proven = True
    try:
        while low < high:
            middle = (low + high + 1) // 2
            found = _pack(free, [demands[k] for k in ascending[:middle]], budget)
            if found is None:
                high = middle - 1
            else:
                low = middle
                fits[middle] = found
    except _BudgetExhausted:
        proven = False
    # Keep the largest count with a placement in hand (the bisection's last success).
    low = max(c for c in fits if c <= low)
    placement: dict[int, int] = dict(zip(ascending[:low], fits[low], strict=True))
    unfit_count = n - low
    if unfit_count == 0:
        return set(), placement, proven

    kept: dict[frozenset[int], dict[int, int]] = {}

    undecided: list[set[int]] = []  # candidates whose packing search gave up

    def rest_fits(chosen: set[int]) -> bool:
        rest = [k for k in range(n) if k not in chosen]
        try:
            found = _pack(free, [demands[k] for k in rest], _Cap(budget, _OVERFLOW_CANDIDATE_NODES))
        except _BudgetExhausted:
            if budget.nodes_left < 0:
                raise
            undecided.append(chosen)
            return False  # this candidate took too long: try the next one
        if found is None:
            return False
        kept[frozenset(chosen)] = dict(zip(rest, found, strict=True))
        return True

    excess = sum(demands) - room
    try:
        unfit, exhaustive = _least_overflow(demands, unfit_count, excess, rest_fits)
    except _BudgetExhausted:
        unfit, exhaustive = set(ascending[low:]), False
    # The least MB is proven only when every candidate set was tried and decided.
    proven = proven and exhaustive and not undecided
    return unfit, kept.get(frozenset(unfit), placement), proven


def _best_fit(free: Sequence[int], demands: Sequence[int]) -> list[int] | None:
    """Best-fit decreasing, without search: a placement into `free`, or None if it fails."""
    room = list(free)
    choice = [0] * len(demands)
    for k in sorted(range(len(demands)), key=lambda k: (-demands[k], k)):
        fitting = [p for p in range(len(room)) if room[p] >= demands[k]]
        if not fitting:
            return None
        p = min(fitting, key=lambda q: (room[q], q))
        room[p] -= demands[k]
        choice[k] = p
    return choice


def _min_max(
    caps: Sequence[int],
    fixed: Sequence[int],
    demands: Sequence[int],
    start: list[int],
    budget: _Budget,
) -> tuple[list[int], Fraction, bool]:
    """The least highest utilization: (placement, proven lower bound, proven optimal).

    Each step asks `_pack` for a placement within a target utilization t, i.e. into
    floor(t * capacity) - fixed MB per GPU: while the gap between the best plan and the
    bound is wide, at t halfway between them (a placement lowers the best, a proof that
    none exists raises the bound); once it is narrow, strictly below the best plan's value
    (a proof that none exists proves that plan optimal). Targets are exact fractions, so
    the proof is exact. A step that cannot decide within its share of the budget moves
    the next target up. Stops with the best so far when the budget runs out.
    """
    best, upper = start, _value(caps, fixed, demands, start)
    lower = _lower_bound(caps, fixed, demands, upper)
    narrow = Fraction(1000 + round(_BISECT_MIN_GAP * 1000), 1000)
    # Where a bisection step gave up (neither a placement nor a proof within its share of
    # the budget): the next target goes above it, where placements are easier to find.
    tried_up_to = lower
    while upper > lower and budget.nodes_left > 0:
        strict = upper <= tried_up_to * narrow
        if strict:
            # load / cap < N / D  <=>  load <= (N * cap - 1) // D, in integers.
            num, den = upper.numerator, upper.denominator
            free = [(num * c - 1) // den - f for c, f in zip(caps, fixed, strict=True)]
            target = upper
            step: _Budget | _Cap = budget  # the proof gets whatever is left
        else:
            target = (tried_up_to + upper) / 2
            num, den = target.numerator, target.denominator
            free = [(num * c) // den - f for c, f in zip(caps, fixed, strict=True)]
            step = _Cap(budget, max(_MIN_STEP_NODES, budget.nodes_left // _STEP_SHARE))
        try:
            found = None if min(free) < 0 else _pack(free, demands, step)
        except _BudgetExhausted:
            if strict or budget.nodes_left <= 0:
                break
            tried_up_to = target
            continue
        if found is None:
            lower = target  # strict: nothing below `upper`, so it is the optimum
            tried_up_to = max(tried_up_to, lower)
            continue
        best, upper = found, _value(caps, fixed, demands, found)
    return best, lower, upper <= lower


def _lower_bound(
    caps: Sequence[int], fixed: Sequence[int], demands: Sequence[int], upper: Fraction
) -> Fraction:
    """A value no placement's highest utilization is below.

    The larger of the pinned load's utilization, the total over the total capacity, and
    the least target utilization that passes `_may_fit`'s relaxations (bisected; the
    targets there get one MB of slack per GPU so that float rounding never overstates it).
    """
    base = max(
        max(Fraction(f, c) for f, c in zip(fixed, caps, strict=True)),
        Fraction(sum(fixed) + sum(demands), sum(caps)),
    )
    if not demands or base >= upper:
        return min(base, upper)

    def admissible(u: float) -> bool:
        free = [math.floor(u * c) + 1 - f for c, f in zip(caps, fixed, strict=True)]
        return _may_fit(demands, 0, free)

    low, high = float(base), float(upper)
    if admissible(low):
        return base
    for _ in range(40):
        middle = (low + high) / 2
        if admissible(middle):
            high = middle
        else:
            low = middle
    return min(upper, max(base, Fraction(low)))


def _local_search(
    caps: Sequence[int], loads: list[int], demands: Sequence[int], choice: list[int]
) -> None:
    """Improve `choice` (and `loads`) in place by leximax-improving moves and swaps.

    Each round takes the GPUs from most to least utilized and, for the first pair (high,
    low) that admits an improving transfer, applies the best single move or swap between
    them: the one that brings the pair's utilizations closest together. A transfer of
    `delta` MB from `high` to `low` improves the leximax order exactly when
    0 < delta < (u_high - u_low) * cap_low, i.e. `low` stays below the old `u_high`.
    """
    gpu_count = len(caps)
    # Per GPU, its movable items as (demand, item) sorted ascending, for bisection.
    held: list[list[tuple[int, int]]] = [[] for _ in range(gpu_count)]
    for i, p in enumerate(choice):
        held[p].append((demands[i], i))
    for items in held:
        items.sort()

    def demand_of(pair: tuple[int, int]) -> int:
        return pair[0]

    def best_transfer(a: int, b: int) -> tuple[int, int] | None:
        """Best improving (item from a, item from b or -1 for a move) between a and b."""
        la, lb, ca, cb = loads[a], loads[b], caps[a], caps[b]
        ua, ub = la / ca, lb / cb
        limit = (ua - ub) * cb
        target = (la * cb - lb * ca) / (ca + cb)  # the delta that equalises the pair
        best_score = (ua, ub)
        best: tuple[int, int] | None = None

        def consider(delta: int, i: int, j: int) -> None:
            nonlocal best_score, best
            if 0 < delta < limit:
                na, nb = (la - delta) / ca, (lb + delta) / cb
                score = (na, nb) if na >= nb else (nb, na)
                if score < best_score:
                    best_score, best = score, (i, j)

        from_a, from_b = held[a], held[b]
        # Moves: the pair's worse utilization is V-shaped in delta around `target`, so
        # the closest item on each side of it is the best on that side.
        k = bisect.bisect_right(from_a, target, key=demand_of)
        for pos in (k - 1, k):
            if 0 <= pos < len(from_a):
                consider(from_a[pos][0], from_a[pos][1], -1)
        # Swaps: for x ascending in a, the y in b with x - y nearest to `target` moves
        # monotonically, so one pointer sweep finds the best swap on each side.
        j = 0
        for x, i in from_a:
            while j < len(from_b) and from_b[j][0] < x - target:
                j += 1
            for pos in (j - 1, j):
                if 0 <= pos < len(from_b):
                    consider(x - from_b[pos][0], i, from_b[pos][1])
        return best

    for _ in range(_LOCAL_SEARCH_STEPS_PER_SERVICE * len(demands) + 10):
        order = sorted(range(gpu_count), key=lambda p: (-loads[p] / caps[p], p))
        transfer = None
        for rank, a in enumerate(order):
            ua = loads[a] / caps[a]
            for b in reversed(order[rank + 1 :]):
                if loads[b] / caps[b] >= ua:
                    break
                transfer = best_transfer(a, b)
                if transfer is not None:
                    break
            if transfer is not None:
                break
        if transfer is None:
            return
        i, j = transfer
        _shift(held, loads, demands, choice, i, a, b)
        if j >= 0:
            _shift(held, loads, demands, choice, j, b, a)


def _shift(
    held: list[list[tuple[int, int]]],
    loads: list[int],
    demands: Sequence[int],
    choice: list[int],
    item: int,
    src: int,
    dst: int,
) -> None:
    """Move one item between GPUs, keeping the sorted per-GPU lists and loads in step."""
    entry = (demands[item], item)
    del held[src][bisect.bisect_left(held[src], entry)]
    bisect.insort(held[dst], entry)
    loads[src] -= demands[item]
    loads[dst] += demands[item]
    choice[item] = dst
