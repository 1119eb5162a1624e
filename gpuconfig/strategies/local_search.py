"""Evening out a placement: moves and swaps that improve the leximax order of utilization
(the highest first, then the second highest, and so on) without raising the highest."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

# Per-service cap on local-search improvements; each one strictly improves the objective,
# so this only guards against pathological slow convergence.
_LOCAL_SEARCH_STEPS_PER_SERVICE = 50


def local_search(
    caps: Sequence[int],
    loads: list[int],
    demands: Sequence[int],
    choice: list[int],
    allowed: Sequence[Sequence[int]] | None = None,
) -> None:
    """Improve `choice` (and `loads`) in place by leximax-improving moves and swaps.

    Each round takes the GPUs from most to least utilized and, for the first pair (high,
    low) that admits an improving transfer, applies the best single move or swap between
    them: the one that brings the pair's utilizations closest together. A transfer of
    `delta` MB from `high` to `low` improves the leximax order exactly when
    0 < delta < (u_high - u_low) * cap_low, i.e. `low` stays below the old `u_high`.

    `allowed`: the GPUs open to each item (None: all); a move or swap never takes an item
    to a GPU not open to it.
    """
    spread = _Spread(caps, loads, demands, choice, allowed)
    for _ in range(_LOCAL_SEARCH_STEPS_PER_SERVICE * len(demands) + 10):
        found = spread.improving_transfer()
        if found is None:
            return
        (i, j), a, b = found
        spread.shift(i, a, b)
        if j >= 0:
            spread.shift(j, b, a)


def _demand_of(pair: tuple[int, int]) -> int:
    return pair[0]


class _Spread:
    """A placement being evened out: loads per GPU and, per GPU, its movable items as
    (demand, item) sorted ascending, for bisection; all kept in step by `shift`."""

    def __init__(
        self,
        caps: Sequence[int],
        loads: list[int],
        demands: Sequence[int],
        choice: list[int],
        allowed: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.caps, self.loads, self.demands, self.choice = caps, loads, demands, choice
        self.allowed = None if allowed is None else [frozenset(a) for a in allowed]
        # Confined items: per GPU, the items open to it; and the GPUs that may have an
        # improving transfer with a less utilized GPU (a GPU found to have none keeps none
        # until it, or a GPU one of its items may go to, changes).
        self.open_to: list[list[int]] = [[] for _ in caps]
        for i, options in enumerate(self.allowed or ()):
            for p in options:
                self.open_to[p].append(i)
        self.unsettled = set(range(len(caps)))
        self.held: list[list[tuple[int, int]]] = [[] for _ in range(len(caps))]
        for i, p in enumerate(choice):
            self.held[p].append((demands[i], i))
        for items in self.held:
            items.sort()

    def improving_transfer(self) -> tuple[tuple[int, int], int, int] | None:
        """The best transfer of the first pair (a, b), from most to least utilized, that
        admits an improving one: ((item from a, item from b or -1), a, b); or None."""
        caps, loads = self.caps, self.loads
        order = sorted(range(len(caps)), key=lambda p: (-loads[p] / caps[p], p))
        if self.allowed is not None:
            return self._improving_confined(order)
        for rank, a in enumerate(order):
            ua = loads[a] / caps[a]
            for b in reversed(order[rank + 1 :]):
                if loads[b] / caps[b] >= ua:
                    break
                transfer = self.best_transfer(a, b)
                if transfer is not None:
                    return transfer, a, b
        return None

    def _improving_confined(self, order: list[int]) -> tuple[tuple[int, int], int, int] | None:
        """`improving_transfer` when items are confined: for each GPU a, only the GPUs open
        to one of its items can take part in a transfer with it."""
        assert self.allowed is not None
        caps, loads = self.caps, self.loads
        for a in order:
            if a not in self.unsettled:
                continue
            ua = loads[a] / caps[a]
            reachable = set().union(*(self.allowed[i] for _, i in self.held[a])) - {a}
            for b in sorted(reachable, key=lambda q: (loads[q] / caps[q], -q)):
                if loads[b] / caps[b] >= ua:
                    break
                transfer = self.best_transfer(a, b)
                if transfer is not None:
                    return transfer, a, b
            self.unsettled.discard(a)
        return None

    def best_transfer(self, a: int, b: int) -> tuple[int, int] | None:
        """Best improving (item from a, item from b or -1 for a move) between a and b."""
        la, lb, ca, cb = self.loads[a], self.loads[b], self.caps[a], self.caps[b]
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

        from_a, from_b = self.held[a], self.held[b]
        if self.allowed is not None:
            allowed = self.allowed
            from_a = [entry for entry in from_a if b in allowed[entry[1]]]
            from_b = [entry for entry in from_b if a in allowed[entry[1]]]
        # Moves: the pair's worse utilization is V-shaped in delta around `target`, so
        # the closest item on each side of it is the best on that side.
        k = bisect.bisect_right(from_a, target, key=_demand_of)
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

    def shift(self, item: int, src: int, dst: int) -> None:
        """Move one item between GPUs, keeping the sorted per-GPU lists and loads in step."""
        demand = self.demands[item]
        entry = (demand, item)
        del self.held[src][bisect.bisect_left(self.held[src], entry)]
        bisect.insort(self.held[dst], entry)
        self.loads[src] -= demand
        self.loads[dst] += demand
        self.choice[item] = dst
        if self.allowed is not None:
            # What a GPU can trade depends on its load and items and on those of the GPUs
            # its items may go to: both ends change, and so may every GPU holding an item
            # open to either end.
            for p in (src, dst):
                self.unsettled.add(p)
                self.unsettled.update(self.choice[i] for i in self.open_to[p])
