"""Balanced: the least highest utilization (load / capacity), proven optimal when the
budget allows, then evened out; when not everything fits, the least harm first."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from fractions import Fraction

from gpuconfig.domain import Optimality
from gpuconfig.strategies.budget import Budget, BudgetExhausted, Cap
from gpuconfig.strategies.harm import fewest_unfit, over_capacity
from gpuconfig.strategies.inventory import Inventory, Item, is_flexible, shrinkable
from gpuconfig.strategies.local_search import local_search
from gpuconfig.strategies.packing import may_fit, pack

# Below this relative gap between the best plan and the bound, the search asks straight
# away for any plan strictly better than the best; above it, it bisects the gap.
_BISECT_MIN_GAP = 0.002
# A bisection step may spend at most 1/_STEP_SHARE of what is left (at least
# _MIN_STEP_NODES): a target that is hard to decide must not eat the whole budget.
_STEP_SHARE = 3
_MIN_STEP_NODES = 500


def balance_flexibly(
    inventory: Inventory, items: list[Item], notes: list[str], budget: Budget
) -> tuple[list[int], set[str], Optimality | None]:
    """Balanced with adjustable budgets: `_balance` at full demands, which is what such a
    service would like (and what it gets where there is room), unless that leaves a
    service that does not fit even at its least while a plan exists where every service
    does; then `_balance` at the least (`Item.need`) of each service.

    What does not fit is judged at the least in both cases: a service whose budget the
    validator shrinks to fit is not listed.
    """
    choice, over, optimality = _balance(inventory, items, budget)
    if not is_flexible(inventory, items):
        return choice, over, optimality
    if over:
        over = over_capacity(inventory, items, choice)
        if not over:
            notes.append(
                "At full estimates not every service fits; the budget of "
                f"{shrinkable(items)} is adjusted down to what is left on its GPU "
                "(never below its minimum), so that everything fits."
            )
    if not over:
        return choice, over, optimality
    # At the least: the items largest first again, as `_balance` expects.
    order = sorted(range(len(items)), key=lambda k: (-items[k].need, k))
    least_items = [
        Item(items[k].name, items[k].need, items[k].tiers, items[k].need, items[k].hosts)
        for k in order
    ]
    least_inventory = Inventory(
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
        f"{shrinkable(items)} at its minimum, so that "
        + ("every service fits" if not least_over else "as few services as possible do not fit")
        + " (the validator then gives it what is left on its GPU); the utilization "
        "figures count it at that minimum."
    )
    return placed, least_over, least_optimality


def _balance(
    inventory: Inventory, items: list[Item], budget: Budget
) -> tuple[list[int], set[str], Optimality | None]:
    """Balanced: (GPU position per item, names that do not fit, what was proven).

    When everything can fit: the least possible highest utilization (load / capacity),
    proven by `_min_max` when the budget allows; then the rest evened out by
    `local_search` (leximax: the second highest, and so on, without raising the highest).
    A GPU that its pinned services alone overload is left to them.

    An item goes only to the GPUs of its `Item.tiers` (those of the hosts that define the
    service): the searches treat the others as closed to it (`_Constrained`).

    When not everything can fit, the least harm, in this order: the fewest services that
    do not fit (`fewest_unfit`), and among as many, the least MB of them; then the fewest
    overloaded GPUs (they all go to one GPU, one that pins already overload if there is
    one); then the least highest utilization of what fits, as above.
    """
    caps, fixed = inventory.caps, inventory.fixed
    demands = [item.demand for item in items]  # largest first (`by_size`)
    usable = [p for p in inventory.positions if fixed[p] <= caps[p]]
    pinned_over = [p for p in inventory.positions if fixed[p] > caps[p]]
    if not usable:
        # Pins alone overload every GPU: nothing placed can fit; spread it thinly.
        loads = list(fixed)
        choice = []
        for item, d in zip(items, demands, strict=True):
            p = min(item.tiers, key=lambda q: ((loads[q] + d) / caps[q], -caps[q], q))
            loads[p] += d
            choice.append(p)
        return choice, {item.name for item in items}, None
    if inventory.constrained(items):
        return _balance_within_hosts(inventory, items, usable, budget)

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
            fit = pack(free, demands, budget)
        except BudgetExhausted:
            unfit_proven = False
        if fit is not None:
            start = fit
        else:
            unfit, known_fit, unfit_proven = fewest_unfit(
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
    local_search(sub_caps, loads, sizes, start)
    best, bound, proven = _min_max(sub_caps, sub_fixed, sizes, start, budget)
    loads = _loads(sub_caps, sub_fixed, sizes, best)
    local_search(sub_caps, loads, sizes, best)

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


def _balance_within_hosts(
    inventory: Inventory, items: list[Item], usable: list[int], budget: Budget
) -> tuple[list[int], set[str], Optimality | None]:
    """`_balance` when some item may go only to some of the GPUs (its `Item.tiers`: the
    GPUs of the hosts that define it). The same objective, each search over the GPUs open
    to the item, and the lower bound over the GPUs each group of items is confined to.

    When not everything fits, the least harm is proven only in the usual case: the items
    that fit on none of their GPUs even alone are left out (every plan leaves them out)
    and the rest fits. Otherwise the most items a best-fit smallest-first pass places are
    kept, without proof that no fewer could be left out (`Optimality` then has no bound).
    """
    caps, fixed = inventory.caps, inventory.fixed
    demands = [item.demand for item in items]
    slot = {p: q for q, p in enumerate(usable)}
    allowed = [[slot[p] for p in sorted(item.tiers) if p in slot] for item in items]
    sub_caps = [caps[p] for p in usable]
    sub_fixed = [fixed[p] for p in usable]
    free = [c - f for c, f in zip(sub_caps, sub_fixed, strict=True)]
    # Items too big for every GPU open to them (or with none left to them): no plan fits them.
    unfit = {k for k in range(len(items)) if not any(free[q] >= demands[k] for q in allowed[k])}
    placed = [k for k in range(len(items)) if k not in unfit]
    unfit_proven = True

    def of(ks: Sequence[int]) -> tuple[list[int], list[list[int]]]:
        return [demands[k] for k in ks], [allowed[k] for k in ks]

    sizes, options = of(placed)
    start = _greedy(sub_caps, sub_fixed, sizes, options)
    if _value(sub_caps, sub_fixed, sizes, start) > 1:
        fit: list[int] | None = None
        with contextlib.suppress(BudgetExhausted):  # then the least harm below, unproven
            fit = pack(free, sizes, budget, options)
        if fit is not None:
            start = fit
        else:
            unfit_proven = False
            where = _most_placed(free, demands, allowed, placed)
            unfit |= {k for k in placed if k not in where}
            placed = [k for k in placed if k in where]
            sizes, options = of(placed)
            start = [where[k] for k in placed]

    loads = _loads(sub_caps, sub_fixed, sizes, start)
    local_search(sub_caps, loads, sizes, start, options)
    best, bound, proven = _min_max(sub_caps, sub_fixed, sizes, start, budget, allowed=options)
    loads = _loads(sub_caps, sub_fixed, sizes, best)
    local_search(sub_caps, loads, sizes, best, options)

    choice = [0] * len(items)
    full_loads = list(fixed)
    for k, q in zip(placed, best, strict=True):
        choice[k] = usable[q]
        full_loads[usable[q]] += demands[k]
    # What does not fit stays on the GPUs open to it, onto one already over capacity if any.
    for k in sorted(unfit, key=lambda k: (-demands[k], k)):
        targets = [p for p in sorted(items[k].tiers) if full_loads[p] > caps[p]]
        p = min(
            targets or items[k].tiers,
            key=lambda q: ((full_loads[q] + demands[k]) / caps[q], -caps[q], q),
        )
        choice[k] = p
        full_loads[p] += demands[k]
    value = _value(sub_caps, sub_fixed, sizes, best)
    optimality = Optimality(
        proven=proven and unfit_proven,
        max_utilization=float(value),
        lower_bound=float(bound) if unfit_proven else 0.0,
    )
    return choice, {items[k].name for k in unfit}, optimality


def _most_placed(
    free: Sequence[int], demands: Sequence[int], allowed: Sequence[Sequence[int]], ks: list[int]
) -> dict[int, int]:
    """Smallest first, each onto the tightest GPU open to it where it fits (or left out):
    {item: GPU} of those placed."""
    room = list(free)
    where: dict[int, int] = {}
    for k in sorted(ks, key=lambda k: (demands[k], k)):
        fitting = [q for q in allowed[k] if room[q] >= demands[k]]
        if fitting:
            q = min(fitting, key=lambda q: (room[q], q))
            room[q] -= demands[k]
            where[k] = q
    return where


def _greedy(
    caps: Sequence[int],
    fixed: Sequence[int],
    demands: Sequence[int],
    allowed: Sequence[Sequence[int]] | None = None,
) -> list[int]:
    """Largest first, each onto the GPU (of those open to it) where its resulting
    utilization is lowest."""
    loads = list(fixed)
    choice = []
    everywhere = range(len(caps))
    for k, d in enumerate(demands):
        candidates = everywhere if allowed is None else allowed[k]
        p = min(candidates, key=lambda q: ((loads[q] + d) / caps[q], -caps[q], q))
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


def _min_max(
    caps: Sequence[int],
    fixed: Sequence[int],
    demands: Sequence[int],
    start: list[int],
    budget: Budget,
    *,
    allowed: Sequence[Sequence[int]] | None = None,
) -> tuple[list[int], Fraction, bool]:
    """The least highest utilization: (placement, proven lower bound, proven optimal).

    Each step asks `pack` for a placement within a target utilization t, i.e. into
    floor(t * capacity) - fixed MB per GPU: while the gap between the best plan and the
    bound is wide, at t halfway between them (a placement lowers the best, a proof that
    none exists raises the bound); once it is narrow, strictly below the best plan's value
    (a proof that none exists proves that plan optimal). Targets are exact fractions, so
    the proof is exact. A step that cannot decide within its share of the budget moves
    the next target up. Stops with the best so far when the budget runs out. `allowed`:
    the GPUs open to each demand (None: all).
    """
    best, upper = start, _value(caps, fixed, demands, start)
    lower = _lower_bound(caps, fixed, demands, upper, allowed)
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
            step: Budget | Cap = budget  # the proof gets whatever is left
        else:
            target = (tried_up_to + upper) / 2
            num, den = target.numerator, target.denominator
            free = [(num * c) // den - f for c, f in zip(caps, fixed, strict=True)]
            step = Cap(budget, max(_MIN_STEP_NODES, budget.nodes_left // _STEP_SHARE))
        try:
            found = None if min(free) < 0 else pack(free, demands, step, allowed)
        except BudgetExhausted:
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
    caps: Sequence[int],
    fixed: Sequence[int],
    demands: Sequence[int],
    upper: Fraction,
    allowed: Sequence[Sequence[int]] | None = None,
) -> Fraction:
    """A value no placement's highest utilization is below.

    The larger of the pinned load's utilization, the total over the total capacity, and
    the least target utilization that passes `may_fit`'s relaxations (bisected; the
    targets there get one MB of slack per GPU so that float rounding never overstates it).
    With `allowed` (the GPUs open to each demand), the same for every group of GPUs that
    some demand is confined to, over the demands confined to it: they must fit there.
    """
    bound = _group_bound(caps, fixed, demands, upper, Fraction(0))
    if allowed is None or not demands or bound >= upper:
        return bound
    groups = sorted({tuple(options) for options in allowed if len(options) < len(caps)})
    confined = [frozenset(options) for options in allowed]
    for group in groups:
        members = frozenset(group)
        inside = sorted(
            (d for d, options in zip(demands, confined, strict=True) if options <= members),
            reverse=True,
        )
        bound = _group_bound(
            [caps[q] for q in group], [fixed[q] for q in group], inside, upper, bound
        )
        if bound >= upper:
            break
    return bound


def _group_bound(
    caps: Sequence[int],
    fixed: Sequence[int],
    demands: Sequence[int],
    upper: Fraction,
    known: Fraction,
) -> Fraction:
    """`_lower_bound` over these GPUs and demands (largest first) alone, at least `known`."""
    base = max(
        known,
        max(Fraction(f, c) for f, c in zip(fixed, caps, strict=True)),
        Fraction(sum(fixed) + sum(demands), sum(caps)),
    )
    if not demands or base >= upper:
        return min(base, upper)

    def admissible(u: float) -> bool:
        free = [math.floor(u * c) + 1 - f for c, f in zip(caps, fixed, strict=True)]
        return may_fit(demands, 0, free)

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
