"""Exact and bounding references for the planner, used by the benchmark and the tests.

Independent of the product's search on purpose: the brute forces enumerate every
placement, so their answers are right by construction; the mid-size reference is a
constraint-programming model solved by OR-Tools CP-SAT (a dev dependency), a different
method from the product's own packing search. Never imported by the app.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "Harm",
    "brute_force_least_harm",
    "brute_force_min_max",
    "cpsat_fits_within",
    "cpsat_least_harm",
    "feasible",
    "lower_bound",
    "lower_bound_with_pins",
]


@dataclass(frozen=True)
class Harm:
    """The least-harm objective, compared in this order (smaller is better).

    `unfit`: services that fit on no GPU; `unfit_mb`: their MB; `max_utilization`: the
    highest load / capacity of what fits, over the GPUs that pinned services alone do not
    overload. `proven`: the solver proved it (always True for the brute force).
    """

    unfit: int
    unfit_mb: int
    max_utilization: Fraction
    proven: bool = True
    # No placement with as few services left out does better (CP-SAT's bound when it ran
    # out of time; equal to `max_utilization` when proven).
    lower_bound: Fraction | None = None

    def key(self) -> tuple[int, int, Fraction]:
        """The lexicographic objective."""
        return (self.unfit, self.unfit_mb, self.max_utilization)


def brute_force_least_harm(
    caps: Sequence[int], demands: Sequence[int], fixed: Sequence[int] | None = None
) -> Harm:
    """The least harm over every way to place each service on a GPU or leave it out.

    A service is left out ("does not fit") or placed on a GPU where it fits within
    capacity; GPUs that pinned load alone overloads take nothing. Enumerates all of it
    (capacity cuts only placements that would not fit): keep instances small.
    """
    gpu_count, n = len(caps), len(demands)
    loads = list(fixed) if fixed is not None else [0] * gpu_count
    usable = [g for g in range(gpu_count) if loads[g] <= caps[g]]
    best: tuple[int, int, Fraction] | None = None

    def visit(k: int, unfit: int, unfit_mb: int) -> None:
        nonlocal best
        if k == n:
            worst = max((Fraction(loads[g], caps[g]) for g in usable), default=Fraction(0))
            key = (unfit, unfit_mb, worst)
            if best is None or key < best:
                best = key
            return
        for g in usable:
            if loads[g] + demands[k] <= caps[g]:
                loads[g] += demands[k]
                visit(k + 1, unfit, unfit_mb)
                loads[g] -= demands[k]
        visit(k + 1, unfit + 1, unfit_mb + demands[k])

    visit(0, 0, 0)
    assert best is not None
    return Harm(*best)


def cpsat_least_harm(
    caps: Sequence[int],
    demands: Sequence[int],
    fixed: Sequence[int] | None = None,
    *,
    seconds: float = 20.0,
) -> Harm:
    """The same objective as `brute_force_least_harm`, by OR-Tools CP-SAT, in three stages.

    1. fewest services left out, 2. least MB left out, 3. the least highest utilization:
    CP-SAT minimises it in millionths, then the exact optimum is pinned down by asking
    for a placement strictly below the best value (load * D < N * capacity for N / D)
    until there is none. `seconds` bounds all of it; `proven` is False when it ran out,
    and `lower_bound` then holds CP-SAT's proven bound on the third stage.
    """
    import time

    from ortools.sat.python import cp_model  # dev dependency, only here

    deadline = time.perf_counter() + seconds

    gpu_count, n = len(caps), len(demands)
    base = list(fixed) if fixed is not None else [0] * gpu_count
    usable = [g for g in range(gpu_count) if base[g] <= caps[g]]
    proven = True

    def model_with(
        unfit_at_most: int | None, unfit_mb_at_most: int | None
    ) -> tuple[cp_model.CpModel, list[list[cp_model.IntVar]], list[cp_model.IntVar]]:
        model = cp_model.CpModel()
        x = [[model.new_bool_var(f"x{i}_{g}") for g in usable] for i in range(n)]
        out = [model.new_bool_var(f"out{i}") for i in range(n)]
        for i in range(n):
            model.add_exactly_one([*x[i], out[i]])
        for j, g in enumerate(usable):
            model.add(sum(demands[i] * x[i][j] for i in range(n)) <= caps[g] - base[g])
        if unfit_at_most is not None:
            model.add(sum(out) <= unfit_at_most)
        if unfit_mb_at_most is not None:
            model.add(sum(demands[i] * out[i] for i in range(n)) <= unfit_mb_at_most)
        return model, x, out

    def solve(model: cp_model.CpModel) -> tuple[cp_model.CpSolver, bool]:
        nonlocal proven
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(0.05, deadline - time.perf_counter())
        solver.parameters.num_workers = 1  # deterministic, and fair on a shared machine
        status = solver.solve(model)
        if status == cp_model.OPTIMAL:
            return solver, True
        if status == cp_model.FEASIBLE:
            proven = False
            return solver, True
        if status == cp_model.INFEASIBLE:
            return solver, False
        proven = False
        return solver, False

    model, _, out = model_with(None, None)
    model.minimize(sum(out))
    solver, _ = solve(model)
    unfit = round(solver.objective_value)
    model, _, out = model_with(unfit, None)
    model.minimize(sum(demands[i] * out[i] for i in range(n)))
    solver, _ = solve(model)
    unfit_mb = round(solver.objective_value)
    if not usable:
        return Harm(unfit, unfit_mb, Fraction(0), proven, Fraction(0))

    scale = 1_000_000
    model, x, out = model_with(unfit, unfit_mb)
    z = model.new_int_var(0, scale, "z")
    for j, g in enumerate(usable):
        load = base[g] + sum(demands[i] * x[i][j] for i in range(n))
        model.add(load * scale <= z * caps[g])
    model.minimize(z)
    solver, _ = solve(model)

    def value(solver: cp_model.CpSolver, x: list[list[cp_model.IntVar]]) -> Fraction:
        loads = [
            base[g] + sum(demands[i] for i in range(n) if solver.value(x[i][j]))
            for j, g in enumerate(usable)
        ]
        return max(Fraction(load, caps[g]) for load, g in zip(loads, usable, strict=True))

    best = value(solver, x)
    # z >= utilization * scale, so the optimum exceeds (bound - 1) / scale.
    bound = max(Fraction(0), Fraction(round(solver.best_objective_bound) - 1, scale))
    while True:
        if time.perf_counter() >= deadline:
            return Harm(unfit, unfit_mb, best, False, min(bound, best))
        model, x, out = model_with(unfit, unfit_mb)
        for j, g in enumerate(usable):
            load = base[g] + sum(demands[i] * x[i][j] for i in range(n))
            model.add(load * best.denominator <= best.numerator * caps[g] - 1)
        solver, found = solve(model)
        if not found:
            return Harm(unfit, unfit_mb, best, proven, best if proven else min(bound, best))
        best = value(solver, x)


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


def lower_bound_with_pins(
    caps: Sequence[int], demands: Sequence[int], fixed: Sequence[int]
) -> float:
    """`lower_bound` with pinned load: the least-harm optimum's bound when everything fits.

    Only GPUs that their pins do not overload count (the others take nothing). At highest
    utilization u a GPU has u * capacity - pinned MB of room; for every k, the services
    too big for all but the k roomiest GPUs must fit, in total, into those k; and
    u >= pinned / capacity everywhere. Monotone in u, bisected; one MB of slack per GPU
    keeps float rounding from overstating it.
    """
    usable = [(c, f) for c, f in zip(caps, fixed, strict=True) if f <= c]
    if not demands or not usable:
        return max((f / c for c, f in usable), default=0.0)

    def admissible(u: float) -> bool:
        rooms = sorted((u * c - f + 1 for c, f in usable), reverse=True)
        if rooms[-1] < 0:
            return False
        for k in range(1, len(rooms) + 1):
            outside = rooms[k] if k < len(rooms) else 0.0
            must_fit = sum(d for d in demands if d > outside)
            if must_fit > sum(rooms[:k]):
                return False
        return True

    low = max(f / c for c, f in usable)
    high = 1.0
    if admissible(low):
        return low
    for _ in range(60):
        mid = (low + high) / 2
        if admissible(mid):
            high = mid
        else:
            low = mid
    return low  # inadmissible, so the optimum lies above it


def cpsat_fits_within(
    caps: Sequence[int],
    demands: Sequence[int],
    fixed: Sequence[int],
    target: Fraction,
    *,
    seconds: float = 10.0,
) -> bool | None:
    """Whether CP-SAT finds every service a GPU with utilization <= `target` everywhere.

    GPUs that pinned load alone overloads are left out (they take nothing). True: found;
    False: proven impossible (so the optimum exceeds `target`); None: out of time.
    """
    from ortools.sat.python import cp_model  # dev dependency, only here

    usable = [g for g in range(len(caps)) if fixed[g] <= caps[g]]
    model = cp_model.CpModel()
    x = [[model.new_bool_var(f"x{i}_{g}") for g in usable] for i in range(len(demands))]
    for row in x:
        model.add_exactly_one(row)
    for j, g in enumerate(usable):
        room = target.numerator * caps[g] // target.denominator - fixed[g]
        model.add(sum(d * x[i][j] for i, d in enumerate(demands)) <= room)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = seconds
    solver.parameters.num_workers = 1
    status = solver.solve(model)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return True
    if status == cp_model.INFEASIBLE:
        return False
    return None
