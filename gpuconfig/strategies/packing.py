"""Bin packing: a placement of demands into free MB per GPU, or a proof that none exists."""

from __future__ import annotations

from collections.abc import Sequence

from gpuconfig.strategies.budget import Budget, Cap


def pack(
    free: Sequence[int],
    demands: Sequence[int],
    budget: Budget | Cap,
    allowed: Sequence[Sequence[int]] | None = None,
) -> list[int] | None:
    """A placement of `demands` into GPUs with `free` MB each, or None when there is none.

    Bin packing by depth-first search: largest demand first, each onto the GPU where it
    fits most tightly (best fit, so the first leaf is the classic best-fit-decreasing
    plan). Pruned by `may_fit`; GPUs with the same free MB (and, with `allowed`, open to
    the same services) are tried once; and a demand that fills a GPU exactly goes there
    and nowhere else (any packing can swap that GPU's contents for it). Exhaustive, hence
    a proof when it answers None; raises `BudgetExhausted` when the budget runs out.
    """
    n = len(demands)
    order = sorted(range(n), key=lambda k: (-demands[k], k))
    sizes = [demands[k] for k in order]
    positions = range(len(free))
    options = [list(allowed[k]) for k in order] if allowed is not None else None
    kind = _kinds(positions, options)
    rest = [0] * (n + 1)
    for k in range(n - 1, -1, -1):
        rest[k] = rest[k + 1] + sizes[k]
    # Cheap tries first: at loose targets spreading (worst fit) often succeeds where best
    # fit's first path paints itself into a corner and the search thrashes below it.
    greedy = _greedy_pack(free, sizes, options, spread=True)
    if greedy is not None:
        return _unsorted(greedy, order)
    room = list(free)
    choice = [0] * n

    def place(k: int) -> bool:
        if k == n:
            return True
        budget.spend()
        if not may_fit(sizes, k, room, rest[k]):
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


def _kinds(positions: range, options: Sequence[Sequence[int]] | None) -> list[int]:
    """A label per GPU: GPUs open to exactly the same services share one, since they are
    interchangeable while equally free."""
    if options is None:
        return [0] * len(positions)
    # Per GPU, the items open to it (in item order): built from the options, not by asking
    # every GPU about every item, which is slow with hundreds of both.
    open_to: list[list[int]] = [[] for _ in positions]
    for k, option in enumerate(options):
        for p in option:
            open_to[p].append(k)
    labels: dict[tuple[int, ...], int] = {}
    return [labels.setdefault(tuple(items), p) for p, items in enumerate(open_to)]


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


def may_fit(
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


def best_fit(free: Sequence[int], demands: Sequence[int]) -> list[int] | None:
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
