"""Exact and bounding references for the planner, used by the benchmark and the tests.

Deliberately naive: the brute force enumerates every placement, so its answer is right
by construction and can judge the product's cleverer search. Never imported by the app.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["brute_force_min_max", "feasible", "lower_bound"]


def brute_force_min_max(
    caps: Sequence[int],
    demands: Sequence[int],
    fixed: Sequence[int] | None = None,
    allowed: Sequence[Sequence[int]] | None = None,
) -> tuple[float, tuple[int, ...]]:
    """Least possible highest utilization over all placements, and one placement reaching it.

    `caps[g]` is GPU g's capacity, `fixed[g]` load already on it (pinned services),
    `allowed[i]` the GPUs service i may use (all by default). Enumerates all
    prod(len(allowed[i])) placements: keep instances small (~1e5 placements).
    Returns (inf, ()) when some service has no allowed GPU.
    """
    gpu_count, n = len(caps), len(demands)
    loads = list(fixed) if fixed is not None else [0] * gpu_count
    options = [list(a) for a in allowed] if allowed is not None else [list(range(gpu_count))] * n
    start = max((load / cap for load, cap in zip(loads, caps, strict=True)), default=0.0)
    best = float("inf")
    best_choice: tuple[int, ...] = ()
    choice = [0] * n

    def visit(k: int, worst: float) -> None:
        nonlocal best, best_choice
        if k == n:
            if worst < best:
                best, best_choice = worst, tuple(choice)
            return
        for g in options[k]:
            loads[g] += demands[k]
            choice[k] = g
            visit(k + 1, max(worst, loads[g] / caps[g]))
            loads[g] -= demands[k]

    visit(0, start)
    return best, best_choice


def feasible(
    caps: Sequence[int],
    demands: Sequence[int],
    fixed: Sequence[int] | None = None,
    allowed: Sequence[Sequence[int]] | None = None,
) -> bool:
    """Whether some placement keeps every GPU within capacity (by brute force)."""
    best, _ = brute_force_min_max(caps, demands, fixed, allowed)
    return best <= 1.0


def lower_bound(caps: Sequence[int], demands: Sequence[int]) -> float:
    """A lower bound on the least possible highest utilization (no pinned load).

    The larger of: total demand / total capacity; the biggest service on the biggest GPU;
    and a capacity-restricted bound: at highest utilization u, a service of d MB can only
    go to GPUs of at least d / u MB, so for every k the services too big for all but the
    k largest GPUs must fit in u times those k GPUs' capacity. That condition is monotone
    in u, and the least u meeting it is found by bisection.
    """
    if not demands:
        return 0.0
    by_size = sorted(caps, reverse=True)
    prefix = [0]
    for cap in by_size:
        prefix.append(prefix[-1] + cap)

    def admissible(u: float) -> bool:
        for k in range(1, len(by_size) + 1):
            outside = by_size[k] if k < len(by_size) else 0
            must_fit = sum(d for d in demands if d > u * outside)
            if must_fit > u * prefix[k]:
                return False
        return True

    low = max(sum(demands) / prefix[-1], max(demands) / by_size[0])
    if admissible(low):
        return low
    high = low * 2
    while not admissible(high):
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        if admissible(mid):
            high = mid
        else:
            low = mid
    return low  # inadmissible, so the optimum lies above it
