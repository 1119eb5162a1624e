"""When not everything fits: which services to list, and the least harm.

The fewest services that do not fit, and among as many, the least MB of them; services
with an adjustable budget count at their least (`Item.need`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

from gpuconfig.strategies.budget import Budget, BudgetExhausted, Cap
from gpuconfig.strategies.inventory import Inventory, Item
from gpuconfig.strategies.packing import best_fit, pack

# Nodes one candidate choice of the services that do not fit may cost (least-harm search).
_OVERFLOW_CANDIDATE_NODES = 2_000


def over_capacity(inventory: Inventory, items: list[Item], choice: list[int]) -> set[str]:
    """The fewest placed items whose absence would leave their GPU within capacity.

    Every item counts at its least (`Item.need`): a GPU that fits once adjustable
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
        for k in least_overflow(demands, count, excess, _always)[0]:
            over.add(here[k].name)
    return over


def _by_need(item: Item) -> int:
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


def least_overflow(
    demands: Sequence[int], count: int, excess: int, rest_fits: Callable[[set[int]], bool]
) -> tuple[set[int], bool]:
    """Indexes of `count` demands adding up to >= `excess` MB, the least MB found.

    `rest_fits(chosen)` says whether what is left without `chosen` can be placed; it must
    hold for the `count` largest demands, the start. With few demands every set of that
    size is tried, from the least total MB up; otherwise each member is swapped for the
    smallest demand that still works. Returns the set and whether every set of that size
    was tried. Raises `BudgetExhausted` only through `rest_fits`.
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


def fewest_unfit(
    free: Sequence[int], demands: Sequence[int], budget: Budget, *, all_known_unfit: bool
) -> tuple[set[int], dict[int, int] | None, bool]:
    """The least harm's first two criteria: which demands do not fit into `free`.

    If any k demands fit, the k smallest do (put each smaller one where a chosen one
    was), so the most that fit is found by bisecting k over the smallest demands. Then
    `least_overflow` picks, among the sets of the other n - k, the one of least MB it
    can. Returns (indexes that do not fit, a placement of the others into `free` when the
    search kept one, whether that set is proven: the fewest, then the least MB).
    """
    n = len(demands)
    # Ties broken opposite to `least_overflow`'s largest-first order, so that the k
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
    low, fitting, proven = _most_that_fit(
        free, [demands[k] for k in ascending], high=high, budget=budget
    )
    placement: dict[int, int] = dict(zip(ascending[:low], fitting, strict=True))
    unfit_count = n - low
    if unfit_count == 0:
        return set(), placement, proven

    kept: dict[frozenset[int], dict[int, int]] = {}

    undecided: list[set[int]] = []  # candidates whose packing search gave up

    def rest_fits(chosen: set[int]) -> bool:
        rest = [k for k in range(n) if k not in chosen]
        try:
            found = pack(free, [demands[k] for k in rest], Cap(budget, _OVERFLOW_CANDIDATE_NODES))
        except BudgetExhausted:
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
        unfit, exhaustive = least_overflow(demands, unfit_count, excess, rest_fits)
    except BudgetExhausted:
        unfit, exhaustive = set(ascending[low:]), False
    # The least MB is proven only when every candidate set was tried and decided.
    proven = proven and exhaustive and not undecided
    return unfit, kept.get(frozenset(unfit), placement), proven


def _most_that_fit(
    free: Sequence[int], ascending: Sequence[int], *, high: int, budget: Budget
) -> tuple[int, list[int], bool]:
    """How many of the smallest demands (`ascending`, at most `high` of them) fit into
    `free`: (that count, a placement of them, whether no more can fit is proven)."""
    # A start that costs no budget: the most smallest demands best-fit decreasing places.
    fits: dict[int, list[int]] = {0: []}
    low, hi = 0, high
    while low < hi:
        middle = (low + hi + 1) // 2
        greedy = best_fit(free, ascending[:middle])
        if greedy is None:
            hi = middle - 1
        else:
            low = middle
            fits[middle] = greedy
    proven = True
    try:
        while low < high:
            middle = (low + high + 1) // 2
            found = pack(free, ascending[:middle], budget)
            if found is None:
                high = middle - 1
            else:
                low = middle
                fits[middle] = found
    except BudgetExhausted:
        proven = False
    # Keep the largest count with a placement in hand (the bisection's last success).
    low = max(c for c in fits if c <= low)
    return low, fits[low], proven
