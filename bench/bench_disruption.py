"""Fewer restarts (issue 19): how many running services a re-plan moves after a small
change, from scratch and with least disruption, and the highest utilization it pays.

Run with `make bench-strategies` (section 6) or `python -m bench.bench_disruption`.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Mapping
from dataclasses import replace

from gpuconfig.domain import Gpu, Plan, Service, ServiceRequest
from gpuconfig.strategies import plan
from gpuconfig.strategies.disruption import DEFAULT_TOLERANCE

SEED = 19
INSTANCES = 30
Change = Callable[
    [random.Random, list[Gpu], list[ServiceRequest]], tuple[list[Gpu], list[ServiceRequest]]
]


def _instance(rng: random.Random, pins: bool) -> tuple[list[Gpu], list[ServiceRequest]]:
    gpus = [
        Gpu(i, f"GPU {i}", rng.choice([8000, 12000, 16000, 24000, 48000, 80000]))
        for i in range(rng.randint(4, 8))
    ]
    capacity = sum(g.vram_total_mb for g in gpus)
    count = rng.randint(12, 30)
    load = rng.uniform(0.5, 0.8)  # the services fill 50-80% of the GPUs
    weights = [rng.uniform(0.2, 1.0) for _ in range(count)]
    scale = load * capacity / sum(weights)
    requests = [
        ServiceRequest(Service(f"ai-s{k:02d}", "m", max(200, min(int(w * scale), 40000))))
        for k, w in enumerate(weights)
    ]
    if pins:
        for k in rng.sample(range(count), 2):
            requests[k] = replace(requests[k], pinned_gpu=rng.randrange(len(gpus)))
    return gpus, requests


def _add(
    rng: random.Random, gpus: list[Gpu], requests: list[ServiceRequest]
) -> tuple[list[Gpu], list[ServiceRequest]]:
    return gpus, [*requests, ServiceRequest(Service("ai-newcomer", "m", 800))]


def _grow(
    rng: random.Random, gpus: list[Gpu], requests: list[ServiceRequest]
) -> tuple[list[Gpu], list[ServiceRequest]]:
    k = rng.randrange(len(requests))
    service = requests[k].service
    changed = replace(service, vram_estimate_mb=round(service.vram_estimate_mb * 1.1))
    return gpus, [*requests[:k], replace(requests[k], service=changed), *requests[k + 1 :]]


def _remove(
    rng: random.Random, gpus: list[Gpu], requests: list[ServiceRequest]
) -> tuple[list[Gpu], list[ServiceRequest]]:
    k = rng.randrange(len(requests))
    return gpus, [*requests[:k], *requests[k + 1 :]]


def _gpu_gone(
    rng: random.Random, gpus: list[Gpu], requests: list[ServiceRequest]
) -> tuple[list[Gpu], list[ServiceRequest]]:
    k = rng.randrange(len(gpus))
    gone = gpus[k].index
    # A pin to the missing GPU would keep its service there: unpin it, as an operator would.
    kept = [replace(r, pinned_gpu=None) if r.pinned_gpu == gone else r for r in requests]
    return [*gpus[:k], replace(gpus[k], present=False), *gpus[k + 1 :]], kept


CHANGES: list[tuple[str, Change]] = [
    ("(a) add an 800 MiB service", _add),
    ("(b) one estimate +10%", _grow),
    ("(c) remove a service", _remove),
    ("(d) a GPU disappears", _gpu_gone),
]


def _gap(result: Plan) -> float | None:
    """How far the plan's highest utilization is above balanced's proven bound."""
    optimality = result.optimality
    if optimality is None or optimality.lower_bound <= 0:
        return None
    return optimality.max_utilization / optimality.lower_bound - 1


def _old_plan_fits(
    gpus: list[Gpu], requests: list[ServiceRequest], current: Mapping[str, int | None], bound: float
) -> bool:
    """Whether keeping every running service where it is (a new one on the least-used GPU)
    stays within the tolerance of the optimum: where the target is 0 moves."""
    present = {g.index: g for g in gpus if g.present}
    load = dict.fromkeys(present, 0)
    newcomers = []
    for request in requests:
        gpu = current.get(request.service.name)
        if gpu is None:
            newcomers.append(request)
        elif gpu not in present:
            return False  # its GPU is gone: it must move
        else:
            load[gpu] += request.service.vram_estimate_mb
    for request in newcomers:
        least = min(present, key=lambda i: load[i] / present[i].vram_total_mb)
        load[least] += request.service.vram_estimate_mb
    worst = max(load[i] / present[i].vram_total_mb for i in present)
    return worst <= bound * (1 + float(DEFAULT_TOLERANCE)) + 1e-9


def main() -> list[str]:
    rng = random.Random(SEED)
    header = (
        f"{'change':26} {'pins':>4} {'n':>3} {'harm':>4} | {'moved: re-plan med/mean/max':>27} | "
        f"{'least disruption med/mean/max':>29} | "
        f"{'max util over optimum: re-plan / least (mean, max)':>50} | proven"
        " | old plan fits: n, least moves med/max"
    )
    lines = [header]
    print(header)
    for pins in (False, True):
        bases = []
        for _ in range(INSTANCES):
            gpus, requests = _instance(rng, pins)
            base = plan("balanced", gpus, requests, reserve_mb=0)
            bases.append((gpus, requests, base.assignments))
        for label, change in CHANGES:
            scratch_moves: list[int] = []
            least_moves: list[int] = []
            scratch_gaps: list[float] = []
            least_gaps: list[float] = []
            harm = proven = 0
            where_fits: list[int] = []
            for gpus, requests, current in bases:
                new_gpus, new_requests = change(rng, gpus, requests)
                result = plan("balanced", new_gpus, new_requests, reserve_mb=0, current=current)
                scratch = plan(
                    "balanced",
                    new_gpus,
                    new_requests,
                    reserve_mb=0,
                    current=current,
                    from_scratch=True,
                )
                d = result.disruption
                assert d is not None
                if d.max_utilization is None:
                    harm += 1  # not everything fits: the least-harm plan stands
                    continue
                scratch_moves.append(len(d.scratch_moved))
                least_moves.append(len(d.moved))
                proven += d.proven
                bound = scratch.optimality.lower_bound if scratch.optimality else None
                if bound and _old_plan_fits(new_gpus, new_requests, current, bound):
                    where_fits.append(len(d.moved))
                for gaps, plan_result in ((scratch_gaps, scratch), (least_gaps, result)):
                    gap = _gap(plan_result)
                    if gap is not None:
                        gaps.append(gap)
            line = (
                f"{label:26} {'yes' if pins else 'no':>4} {len(scratch_moves):>3} {harm:>4} | "
                f"{_stats(scratch_moves):>27} | {_stats(least_moves):>29} | "
                f"{_pct(scratch_gaps):>24} / {_pct(least_gaps):<23} | {proven}/{len(least_moves)}"
                f" | {len(where_fits):>3}, "
                + (f"{statistics.median(where_fits):g}/{max(where_fits)}" if where_fits else "-")
            )
            lines.append(line)
            print(line, flush=True)
    return lines


def _stats(values: list[int]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):g} / {statistics.mean(values):.1f} / {max(values)}"


def _pct(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.mean(values) * 100:.2f}%, {max(values) * 100:.2f}%"


if __name__ == "__main__":
    main()
