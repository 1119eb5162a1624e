"""Least disruption: keep running services on their GPU unless the strategy's goal needs
them elsewhere, and then move as few as possible, the cheapest restarts first.

Every move restarts a container, so after the strategy's own plan (the re-plan from
scratch) the planner looks for the plan that moves the least restart cost (then the
fewest services) among the plans that reach the same goal:

* balanced: every GPU at most the scratch plan's highest utilization (the proven optimum
  when the budget allowed the proof) times 1 + the tolerance, and within capacity;
* the rule strategies: every service on a GPU of its preferred tier (or where the rule put
  it), and within capacity.

When not everything fits, the least-harm plan of the strategy stands: the rules that
decide which services are listed keep their meaning. The search is a branch and bound
counted in the planner's search nodes, so equal inputs give equal plans; when the budget
runs out it keeps the best plan found so far (never worse than the re-plan from scratch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from gpuconfig.domain import Disruption, format_vram, gpu_label
from gpuconfig.strategies.budget import Budget, BudgetExhausted, Cap
from gpuconfig.strategies.inventory import Inventory, Item
from gpuconfig.strategies.packing import may_fit, pack

# The default allowance over balanced's optimum (System setting disruption_tolerance_percent).
DEFAULT_TOLERANCE = Fraction(2, 100)
# Nodes the packing of the services the quick first plan moves may take.
_GREEDY_PACK_NODES = 2_000


@dataclass(frozen=True)
class Current:
    """Where the services run now (service -> GPU index) and what moving each costs (ms
    out of service, `domain.restart_cost_ms`); `from_scratch`: the operator asked for the
    full re-plan, whose placement the plan then follows."""

    placements: Mapping[str, int]
    costs: Mapping[str, int]
    tolerance: Fraction = DEFAULT_TOLERANCE
    from_scratch: bool = False


@dataclass(frozen=True)
class Kept:
    """The least-disruption answer for the items the strategy placed."""

    choice: list[int]
    moved: list[tuple[str, str]]  # (service, why), in item order
    scratch_moved: list[str]
    max_utilization: float | None
    scratch_max_utilization: float | None
    proven: bool


def keep_in_place(
    inventory: Inventory,
    items: Sequence[Item],
    scratch: list[int],
    *,
    over: set[str],
    current: Current,
    budget: Budget,
    arrivals: Mapping[int, list[str]],
    balanced_bound: Fraction | None = None,
) -> Kept:
    """The plan that reaches the strategy's goal with the least restart cost.

    `scratch` is the strategy's own placement of `items` (GPU positions), `over` the
    services it could not fit. `arrivals` maps a GPU position to the pinned services that
    come to it from elsewhere (for the reasons). `balanced_bound` is balanced's proven lower
    bound (None: a rule strategy): the tolerance counts from it (a plan that is not proven
    optimal may be above it), never below the scratch plan's own utilization.
    """
    balanced = balanced_bound is not None
    position = {gpu.index: p for p, gpu in enumerate(inventory.gpus)}
    now = [position.get(current.placements.get(item.name, -1), -1) for item in items]
    running = [item.name in current.placements for item in items]
    caps = inventory.caps
    full = _fits(inventory.fixed, caps, [i.demand for i in items], scratch)
    fixed = inventory.fixed if full else inventory.fixed_need
    sizes = [item.demand if full else item.need for item in items]
    usable = [p for p in inventory.positions if fixed[p] <= caps[p]]
    scratch_value = _utilization(fixed, caps, sizes, scratch, usable)
    scratch_moved = [
        item.name for k, item in enumerate(items) if running[k] and scratch[k] != now[k]
    ]
    if over:
        # Not everything fits: the least-harm plan stands as the strategy made it.
        moved = [
            (name, "not every service fits: placed by the least-harm rules")
            for name in scratch_moved
        ]
        return Kept(scratch, moved, scratch_moved, None, None, True)

    if balanced:
        assert scratch_value is not None
        assert balanced_bound is not None
        optimum = min(scratch_value, balanced_bound) if balanced_bound > 0 else scratch_value
        ceiling = max(scratch_value, optimum * (1 + current.tolerance))
        limits = [min(c, math.floor(ceiling * c)) for c in caps]
    else:
        limits = list(caps)
    allowed: list[list[int]] = []
    for k, item in enumerate(items):
        best_tier = min(item.tiers.values())
        open_ = [
            p
            for p in sorted(item.tiers)
            if p in usable and (balanced or item.tiers[p] == best_tier)
        ]
        if scratch[k] not in open_:
            open_.append(scratch[k])
        allowed.append(open_)
    n = len(items)
    problem = _Problem(
        items=items,
        inventory=inventory,
        limits=limits,
        fixed=list(fixed),
        sizes=sizes,
        allowed=allowed,
        now=now,
        weights=[current.costs.get(item.name, item.demand) * (n + 1) + 1 for item in items],
        balanced=balanced,
        tolerance=current.tolerance,
        scratch_value=scratch_value,
        arrivals=arrivals,
    )
    choice, proven = _Search(problem, budget).run(scratch)
    moved = [
        (item.name, _why(problem, k, choice))
        for k, item in enumerate(items)
        if running[k] and choice[k] != now[k]
    ]
    value = _utilization(fixed, caps, sizes, choice, usable)
    return Kept(
        choice,
        moved,
        scratch_moved,
        None if value is None else float(value),
        None if scratch_value is None else float(scratch_value),
        proven,
    )


def disruption_of(
    kept: Kept, pinned_moves: Sequence[tuple[str, str]], current: Current
) -> Disruption:
    """The plan's `Disruption`, the pinned services that change GPU counted in both plans."""
    moved = list(pinned_moves) + kept.moved
    return Disruption(
        moved=tuple(name for name, _ in moved),
        reasons=tuple(why for _, why in moved),
        scratch_moved=tuple([name for name, _ in pinned_moves] + kept.scratch_moved),
        max_utilization=kept.max_utilization,
        scratch_max_utilization=kept.scratch_max_utilization,
        tolerance=float(current.tolerance),
        from_scratch=current.from_scratch,
        proven=kept.proven,
    )


def _fits(
    fixed: Sequence[int], caps: Sequence[int], sizes: Sequence[int], choice: Sequence[int]
) -> bool:
    loads = list(fixed)
    for size, p in zip(sizes, choice, strict=True):
        loads[p] += size
    return all(loads[p] <= caps[p] for p in set(choice))


def _utilization(
    fixed: Sequence[int],
    caps: Sequence[int],
    sizes: Sequence[int],
    choice: Sequence[int],
    usable: Sequence[int],
) -> Fraction | None:
    """The highest load / capacity over the GPUs pins do not overload (exact)."""
    if not usable:
        return None
    loads = list(fixed)
    for size, p in zip(sizes, choice, strict=True):
        loads[p] += size
    return max(Fraction(loads[p], caps[p]) for p in usable)


@dataclass(frozen=True)
class _Problem:
    """One least-disruption search: per GPU position the most MB it may hold (`limits`)
    and the pinned load (`fixed`); per item its size, the positions open to it, where it
    runs now (-1: nowhere) and its weight (restart cost, then one per move)."""

    items: Sequence[Item]
    inventory: Inventory
    limits: list[int]
    fixed: list[int]
    sizes: Sequence[int]
    allowed: Sequence[Sequence[int]]
    now: Sequence[int]
    weights: Sequence[int]
    balanced: bool
    tolerance: Fraction
    scratch_value: Fraction | None
    arrivals: Mapping[int, list[str]]


class _Search:
    """Branch and bound over the items: stay first (free), then the other open GPUs.

    The bound: on every GPU that the services still to decide would overload if they all
    stayed, the excess must leave; the cheapest way per MB (fractionally) is a lower bound
    on what that costs.
    """

    def __init__(self, problem: _Problem, budget: Budget) -> None:
        self.limits, self.caps, self.sizes = problem.limits, problem.inventory.caps, problem.sizes
        self.budget, self.spread = budget, problem.balanced
        allowed, now, weights, sizes = problem.allowed, problem.now, problem.weights, problem.sizes
        fixed = problem.fixed
        n = len(sizes)
        self.stays = [now[k] in allowed[k] for k in range(n)]
        # Services that must be placed anew first (largest first), then the rest.
        self.order = sorted(range(n), key=lambda k: (self.stays[k], -sizes[k], k))
        self.allowed, self.now, self.weights = allowed, now, weights
        self.loads = list(fixed)
        positions = range(len(self.limits))
        # For each depth: per GPU, the undecided services that could stay on it, cheapest
        # per MB first, and their total.
        self.stayers: list[list[list[tuple[int, int]]]] = []
        for depth in range(n + 1):
            per_gpu: list[list[tuple[int, int]]] = [[] for _ in positions]
            for k in self.order[depth:]:
                if self.stays[k]:
                    per_gpu[now[k]].append((weights[k], sizes[k]))
            for entries in per_gpu:
                entries.sort(key=lambda e: Fraction(e[0], max(1, e[1])))
            self.stayers.append(per_gpu)
        self.pending = [
            sorted((sizes[k] for k in self.order[d:]), reverse=True) for d in range(n + 1)
        ]
        self.best: list[int] = []
        self.best_cost = 0

    def cost(self, choice: Sequence[int]) -> int:
        return sum(
            self.weights[k]
            for k in range(len(choice))
            if self.now[k] >= 0 and choice[k] != self.now[k]
        )

    def run(self, scratch: list[int]) -> tuple[list[int], bool]:
        """The cheapest placement found, and whether it is proven cheapest."""
        self.best, self.best_cost = list(scratch), self.cost(scratch)
        greedy = self._greedy()
        if greedy is not None and self.cost(greedy) < self.best_cost:
            self.best, self.best_cost = greedy, self.cost(greedy)
        if self.best_cost == 0:
            return self.best, True
        choice = [0] * len(self.sizes)
        try:
            self._extend(0, 0, choice)
        except BudgetExhausted:
            return self.best, False
        return self.best, True

    def _options(self, k: int) -> list[int]:
        """GPUs to try for service k, after staying: least utilized (balanced) or most
        free MB (the rules) after it arrives; then the lower position."""
        size = self.sizes[k]
        loads, limits, caps = self.loads, self.limits, self.caps
        fitting = [p for p in self.allowed[k] if p != self.now[k] and loads[p] + size <= limits[p]]
        if self.spread:
            return sorted(fitting, key=lambda p: (Fraction(loads[p] + size, caps[p]), p))
        return sorted(fitting, key=lambda p: (loads[p] - caps[p], p))

    def _greedy(self) -> list[int] | None:
        """Everything stays; on an overloaded GPU the cheapest per MB leave until it fits
        (keeping those whose leaving turns out unnecessary); then what has to go is packed
        into the room left (`packing.pack`)."""
        n = len(self.sizes)
        choice = [-1] * n
        saved = list(self.loads)
        try:
            for k in range(n):
                if self.stays[k]:
                    choice[k] = self.now[k]
                    self.loads[self.now[k]] += self.sizes[k]
            for p in range(len(self.limits)):
                if not self._evict(p, choice):
                    return None
            going = [k for k in range(n) if choice[k] < 0]
            free = [limit - load for limit, load in zip(self.limits, self.loads, strict=True)]
            try:
                found = pack(
                    free,
                    [self.sizes[k] for k in going],
                    Cap(self.budget, _GREEDY_PACK_NODES),
                    [self.allowed[k] for k in going],
                )
            except BudgetExhausted:
                found = None
            if found is None:
                return None
            for k, p in zip(going, found, strict=True):
                choice[k] = p
            return choice
        finally:
            self.loads[:] = saved

    def _evict(self, p: int, choice: list[int]) -> bool:
        """Make GPU p fit: the cheapest per MB leave it (choice -1) until it does."""
        n = len(choice)
        if self.loads[p] <= self.limits[p]:
            return True
        here = [k for k in range(n) if choice[k] == p]
        here.sort(key=lambda k: (Fraction(self.weights[k], max(1, self.sizes[k])), k))
        leaving = []
        for k in here:
            if self.loads[p] <= self.limits[p]:
                break
            leaving.append(k)
            self.loads[p] -= self.sizes[k]
        for k in reversed(leaving):  # the last one may have made room for others
            if self.loads[p] + self.sizes[k] <= self.limits[p]:
                self.loads[p] += self.sizes[k]
            else:
                choice[k] = -1
        return self.loads[p] <= self.limits[p]

    def _bound(self, depth: int) -> int | None:
        """The least the undecided services' moves can cost; None when they cannot fit."""
        free = [limit - load for limit, load in zip(self.limits, self.loads, strict=True)]
        if min(free) < 0 or not may_fit(self.pending[depth], 0, free):
            return None
        total = 0
        for p, entries in enumerate(self.stayers[depth]):
            excess = -free[p] + sum(size for _, size in entries)
            for weight, size in entries:
                if excess <= 0:
                    break
                if size >= excess:
                    total += math.ceil(weight * excess / size)
                    excess = 0
                else:
                    total += weight
                    excess -= size
        return total

    def _extend(self, depth: int, cost: int, choice: list[int]) -> None:
        self.budget.spend()
        bound = self._bound(depth)
        if bound is None or cost + bound >= self.best_cost:
            return
        if depth == len(self.order):
            self.best, self.best_cost = list(choice), cost
            return
        k = self.order[depth]
        size = self.sizes[k]
        if self.stays[k] and self.loads[self.now[k]] + size <= self.limits[self.now[k]]:
            p = self.now[k]
            self.loads[p] += size
            choice[k] = p
            self._extend(depth + 1, cost, choice)
            self.loads[p] -= size
        # Placed for the first time (or its GPU is gone): no restart to count.
        moved_cost = cost + (self.weights[k] if self.now[k] >= 0 else 0)
        for p in self._options(k):
            if moved_cost >= self.best_cost:
                return
            self.loads[p] += size
            choice[k] = p
            self._extend(depth + 1, moved_cost, choice)
            self.loads[p] -= size


def _why(problem: _Problem, k: int, choice: Sequence[int]) -> str:
    """Why service k leaves its GPU, in an operator's words."""
    items, now, allowed, sizes = problem.items, problem.now, problem.allowed, problem.sizes
    fixed, limits, caps = problem.fixed, problem.limits, problem.inventory.caps
    inventory, scratch_value, tolerance = (
        problem.inventory,
        problem.scratch_value,
        problem.tolerance,
    )
    arrivals, balanced = problem.arrivals, problem.balanced
    p = now[k]
    if p < 0:
        return "the GPU it ran on is gone"
    at = inventory.gpus[p]
    gpu = gpu_label(at.index, at.host)  # "GPU 1"; another host's: "gpu-box-2 / GPU 1"
    if fixed[p] > caps[p]:
        return f"pinned services alone overload {gpu}"
    hosts, host = items[k].hosts, at.host
    if hosts is not None and host not in hosts:
        if gpu != gpu_label(at.index):  # the label names its host already
            return f"{gpu} is on a host that does not define it"
        return f"{gpu} is on {host or 'the local host'}, which does not define it"
    if p not in allowed[k]:
        return f"the strategy's rule keeps it off {gpu}"
    comers = list(arrivals.get(p, [])) + [
        items[j].name for j in range(len(items)) if choice[j] == p and now[j] != p
    ]
    staying = fixed[p] + sum(sizes[j] for j in range(len(items)) if now[j] == p and p in allowed[j])
    if staying > caps[p]:
        reason = (
            f"with every service staying {gpu} would hold {format_vram(staying)} "
            f"of its {format_vram(caps[p])}"
        )
    elif staying > limits[p] and balanced and scratch_value is not None:
        reason = (
            f"with every service staying {gpu} would be "
            f"{_percent(Fraction(staying, caps[p]))} full, above the balanced optimum "
            f"({_percent(scratch_value)}) plus the {_percent(tolerance)} tolerance"
        )
    else:
        reason = f"it makes room on {gpu}"
    if comers:
        reason += f" (for {', '.join(comers)})"
    return reason


def _percent(value: Fraction) -> str:
    return f"{float(value) * 100:.1f}%".replace(".0%", "%")
