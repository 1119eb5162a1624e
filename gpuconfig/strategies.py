"""The five assignment strategies: which GPU each enabled service goes to.

Pure functions over the dataclasses of `gpuconfig.domain`: no Django, no I/O.

Shared rules for the automatic strategies (everything but manual):

* Only present GPUs are candidates; disabled services are left out entirely.
* A pinned service stays on its pin (even a GPU that is not detected: the validator
  reports that) and its demand counts as fixed load on that GPU.
* Capacity is a GPU's total VRAM; a service's demand is `domain.demand_mb`.
* When a strategy's rule overloads a GPU, a bounded backtracking search looks for the
  nearest placement, in the rule's own order of preference, that fits. When none fits
  (or the search runs out of steps) the rule's placement is kept and the services that do
  not fit are listed in `Plan.over_capacity`: every service still gets a GPU.

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
* balanced: least possible highest utilization, then as even as possible (`_balance`).
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpuconfig.domain import (
    Gpu,
    Plan,
    ServiceRequest,
    StrategyName,
    demand_mb,
)

__all__ = ["StrategyError", "fastest_gpu", "largest_gpu", "plan"]

# Steps the backtracking searches may take. Enough to search any instance with at most
# ~1e5 complete placements exhaustively (a tree with G**n leaves has under 1.5 * G**n
# nodes for G >= 3, 2 * G**n for G == 2), while bounding the time spent on big ones.
_SEARCH_NODE_BUDGET = 200_000
# Budget for the rule strategies' fit search on larger instances, where it can neither be
# exhaustive nor, at ~5 us a node, afford the full budget.
_SMALL_NODE_BUDGET = 20_000
# Balanced runs its exact search only on instances this small (GPUs ** services); larger
# ones rely on the greedy start plus local search, which stays fast.
_EXACT_SEARCH_MAX_LEAVES = 100_000
# Per-service cap on local-search improvements; each one strictly improves the objective,
# so this only guards against pathological slow convergence.
_LOCAL_SEARCH_STEPS_PER_SERVICE = 50


class StrategyError(ValueError):
    """The strategy cannot produce a plan for this input (the message says why)."""


@dataclass(frozen=True)
class _Item:
    """A service the strategy places: its demand and the GPUs it may go to.

    `tiers` maps GPU position -> preference tier (0 = preferred). A strategy's rule picks,
    among the GPUs of the best tier where the service fits, the one with the most free MB.
    """

    name: str
    demand: int
    tiers: dict[int, int]


@dataclass(frozen=True)
class _Inventory:
    """Present GPUs by position (sorted by index) and the load pinned services put on them."""

    gpus: tuple[Gpu, ...]
    caps: tuple[int, ...]
    fixed: tuple[int, ...]

    @property
    def positions(self) -> range:
        """All GPU positions."""
        return range(len(self.gpus))


def plan(
    strategy: StrategyName | str,
    gpus: Sequence[Gpu],
    requests: Sequence[ServiceRequest],
) -> Plan:
    """Assign every enabled service to a GPU with the given strategy.

    Raises `StrategyError` for input no strategy can honour: duplicate service names or
    GPU indexes, negative demands, a present GPU without VRAM, an unpinned enabled service
    under the manual strategy, or services to place while no GPU is present.
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
    for request in enabled:
        if request.pinned_gpu is not None and request.pinned_gpu in position:
            fixed[position[request.pinned_gpu]] += demand_mb(request)
    inventory = _Inventory(
        gpus=tuple(present),
        caps=tuple(g.vram_total_mb for g in present),
        fixed=tuple(fixed),
    )

    notes: list[str] = []
    if strategy is StrategyName.VRAM_BASED:
        items = _vram_based_items(inventory, movable)
        choice = _place_by_rule(inventory, items, notes)
    elif strategy is StrategyName.LATENCY_OPTIMIZED:
        items = _latency_items(inventory, movable, notes)
        choice = _place_by_rule(inventory, items, notes)
    elif strategy is StrategyName.ISOLATION_FIRST:
        items = _isolation_items(inventory, enabled, notes)
        choice = _place_by_rule(inventory, items, notes)
    else:
        items = _vram_based_items(inventory, movable)
        choice = _balance(inventory, items)

    placed = pins | {
        item.name: inventory.gpus[p].index for item, p in zip(items, choice, strict=True)
    }
    over = _over_capacity(inventory, items, choice)
    order = {r.service.name: i for i, r in enumerate(enabled)}
    return Plan(
        # Keep the caller's service order so the plan reads like the request list.
        assignments={r.service.name: placed[r.service.name] for r in enabled},
        over_capacity=tuple(sorted(over, key=order.__getitem__)),
        notes=tuple(notes),
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
        if demand_mb(request) < 0:
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


def _by_size(requests: Iterable[ServiceRequest]) -> list[ServiceRequest]:
    """Largest demand first; equal demands keep request order (the sort is stable)."""
    return sorted(requests, key=lambda r: -demand_mb(r))


def _vram_based_items(inventory: _Inventory, movable: list[ServiceRequest]) -> list[_Item]:
    """Every GPU is equally allowed; largest service first."""
    everywhere = dict.fromkeys(inventory.positions, 0)
    return [_Item(r.service.name, demand_mb(r), everywhere) for r in _by_size(movable)]


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
    return [_Item(r.service.name, demand_mb(r), {fast: 0}) for r in _by_size(critical)] + [
        _Item(r.service.name, demand_mb(r), rest_tiers) for r in _by_size(rest)
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
        return [_Item(r.service.name, demand_mb(r), everywhere) for r in _by_size(movable)]

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
    return [_Item(r.service.name, demand_mb(r), {big: 0}) for r in _by_size(llms)] + [
        _Item(r.service.name, demand_mb(r), shared_tiers) for r in _by_size(rest)
    ]


# --- rule-based placement (vram_based, latency_optimized, isolation_first) --------------


def _rule_order(item: _Item, caps: Sequence[int], loads: Sequence[int]) -> list[int]:
    """The item's GPUs in the rule's order: best tier, most free MB, bigger card, lower index."""
    # Positions follow GPU index order, so the position breaks the last tie like the index.
    return sorted(item.tiers, key=lambda p: (item.tiers[p], loads[p] - caps[p], -caps[p], p))


def _place_by_rule(inventory: _Inventory, items: list[_Item], notes: list[str]) -> list[int]:
    """The rule's greedy placement, or the nearest one in its order that fits.

    Greedy: each item in turn goes to the first GPU in `_rule_order` where it fits, or
    when it fits nowhere, to the first GPU in that order (the most free MB of its
    preferred tier). Among candidates of one tier this is the design's "most free MB"
    rule; note that it evens out free megabytes, not utilization (that is balanced's job).
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
    if all(loads[p] <= caps[p] for p in inventory.positions):
        return choice

    better = _search_fit(inventory, items)
    if better is None:
        return choice
    notes.append(
        "The plain rule overloaded a GPU; services were rearranged, in the rule's order of "
        "preference, so that every GPU stays within capacity."
    )
    return better


class _BudgetExhausted(Exception):
    """A search used up its node budget."""


def _search_fit(inventory: _Inventory, items: list[_Item]) -> list[int] | None:
    """Depth-first search for a placement within capacity, trying GPUs in the rule's order.

    Returns the first placement found (so the closest to the greedy one in the rule's
    lexicographic order of choices), or None when there is none or the budget runs out.
    Exhaustive, hence exact, when there are at most 1e5 complete placements; larger
    instances get a smaller budget so that a hopeless search stays within 0.1-0.2 s.
    """
    caps = inventory.caps
    loads = list(inventory.fixed)
    n = len(items)
    leaves = math.prod(len(item.tiers) for item in items)
    budget = _SEARCH_NODE_BUDGET if leaves <= _EXACT_SEARCH_MAX_LEAVES else _SMALL_NODE_BUDGET
    # GPUs that look the same to every item (same tier for each item, same size) are
    # interchangeable while their loads are equal: trying one of them is enough.
    signatures = [tuple(item.tiers.get(p) for item in items) for p in inventory.positions]
    kind = [signatures.index(signature) for signature in signatures]  # small ints hash fast
    # The demands still to place from item k on, ascending, for the bound in `_may_fit`.
    pending: list[list[int]] = [[] for _ in range(n + 1)]
    for k in range(n - 1, -1, -1):
        pending[k] = pending[k + 1].copy()
        bisect.insort(pending[k], items[k].demand)
    choice = [0] * n
    nodes = 0

    def extend(k: int) -> bool:
        nonlocal nodes
        if k == n:
            return True
        nodes += 1
        if nodes > budget:
            raise _BudgetExhausted
        if not _may_fit(pending[k], [c - load for c, load in zip(caps, loads, strict=True)]):
            return False
        item = items[k]
        tried: set[tuple[int, int, int]] = set()
        for p in _rule_order(item, caps, loads):
            if loads[p] + item.demand > caps[p]:
                continue
            key = (kind[p], caps[p], loads[p])
            if key in tried:
                continue
            tried.add(key)
            loads[p] += item.demand
            choice[k] = p
            if extend(k + 1):
                return True
            loads[p] -= item.demand
        return False

    try:
        return choice if extend(0) else None
    except _BudgetExhausted:
        return None


def _may_fit(demands: list[int], free: list[int]) -> bool:
    """False when `demands` (ascending) certainly cannot be packed into `free` MB per GPU.

    For every j, the demands too big for all but the j GPUs with the most free memory
    must fit, in total, into those j GPUs. With j = all GPUs this is "the total fits".
    """
    free = sorted(free, reverse=True)
    room = 0
    must = 0
    i = len(demands) - 1  # walks the demands from the largest down
    for j in range(len(free)):
        room += max(0, free[j])
        below = free[j + 1] if j + 1 < len(free) else None
        # Demands larger than the next GPU's free memory can only go to the first j + 1.
        while i >= 0 and (below is None or demands[i] > below):
            must += demands[i]
            i -= 1
        if must > room:
            return False
    return True


def _over_capacity(inventory: _Inventory, items: list[_Item], choice: list[int]) -> set[str]:
    """Names of placed items that do not fit their GPU: pins first, then largest first."""
    used = list(inventory.fixed)
    over: set[str] = set()
    placed = sorted(zip(items, choice, strict=True), key=lambda pair: -pair[0].demand)
    for item, p in placed:
        if used[p] + item.demand <= inventory.caps[p]:
            used[p] += item.demand
        else:
            over.add(item.name)
    return over


# --- balanced ----------------------------------------------------------------------------


def _balance(inventory: _Inventory, items: list[_Item]) -> list[int]:
    """Minimise the highest utilization (load / capacity), then even out the rest.

    The objective is leximax over the GPUs' utilizations: the highest one first (the plan
    fits exactly when it is <= 1.0), then the second highest, and so on. That evens out
    utilization from the top down without ever raising the maximum, and unlike a variance
    term it never overloads a small card to even out a big one, and is indifferent to a
    GPU that pinned services alone overload. Comparing two placements that differ on two
    GPUs only needs those two GPUs, so every candidate move is scored in O(1).

    1. Greedy: largest service first onto the GPU where its resulting utilization is lowest.
    2. Local search: single moves and pairwise swaps between two GPUs, best pair transfer
       first, until no move or swap improves the objective.
    3. On small instances (GPUs ** services <= 1e5) a branch and bound finds the exact
       minimum of the highest utilization; local search then evens out the rest.
    """
    caps = inventory.caps
    loads = list(inventory.fixed)
    choice: list[int] = []
    for item in items:
        p = min(
            inventory.positions,
            key=lambda q: ((loads[q] + item.demand) / caps[q], -caps[q], q),
        )
        loads[p] += item.demand
        choice.append(p)
    demands = [item.demand for item in items]
    _local_search(caps, loads, demands, choice)

    gpu_count, n = len(caps), len(items)
    if gpu_count > 1 and n and gpu_count**n <= _EXACT_SEARCH_MAX_LEAVES:
        exact = _min_max_utilization(
            caps, inventory.fixed, demands, max(_utilizations(caps, loads))
        )
        if exact is not None:
            choice = exact
            loads = list(inventory.fixed)
            for d, p in zip(demands, choice, strict=True):
                loads[p] += d
            _local_search(caps, loads, demands, choice)
    return choice


def _utilizations(caps: Sequence[int], loads: Sequence[int]) -> list[float]:
    """Load over capacity, per GPU."""
    return [load / cap for load, cap in zip(loads, caps, strict=True)]


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


def _min_max_utilization(
    caps: Sequence[int], fixed: Sequence[int], demands: Sequence[int], upper: float
) -> list[int] | None:
    """Branch and bound for the least possible highest utilization.

    `demands` must be sorted largest first. Returns a placement strictly better than
    `upper`, or None when there is none or the node budget runs out (then `upper`
    stands; with at most 1e5 leaves the budget always suffices and the answer is exact).
    """
    gpu_count, n = len(caps), len(demands)
    loads = list(fixed)
    # No placement beats the average utilization or what pinned services already cause.
    floor = max(max(_utilizations(caps, fixed)), (sum(fixed) + sum(demands)) / sum(caps))
    if upper <= floor:
        return None
    best = upper
    best_choice: list[int] | None = None
    choice = [0] * n
    nodes = 0

    def utilization(p: int, d: int) -> float:
        return (loads[p] + d) / caps[p]

    def extend(k: int, worst: float) -> bool:
        """Place items k.. given the current highest utilization; True stops the search."""
        nonlocal best, best_choice, nodes
        if k == n:
            best, best_choice = worst, choice.copy()
            return best <= floor
        nodes += 1
        if nodes > _SEARCH_NODE_BUDGET:
            raise _BudgetExhausted
        d = demands[k]
        tried: set[tuple[int, int]] = set()
        for p in sorted(range(gpu_count), key=lambda q: (utilization(q, d), -caps[q], q)):
            new_worst = max(worst, utilization(p, d))
            if new_worst >= best:
                break  # candidates are sorted: no later one is better
            if (caps[p], loads[p]) in tried:
                continue  # same size and load as a GPU already tried: same subtree
            tried.add((caps[p], loads[p]))
            loads[p] += d
            choice[k] = p
            stop = extend(k + 1, new_worst)
            loads[p] -= d
            if stop:
                return True
        return False

    # Out of budget: keep the best found so far; it is still better than `upper`.
    with contextlib.suppress(_BudgetExhausted):
        extend(0, max(_utilizations(caps, fixed)))
    return best_choice
