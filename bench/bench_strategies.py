"""Benchmark the balanced strategy: quality against exact / bounding references, and time.

Run: .venv/bin/python -m bench.bench_strategies   (exits non-zero when a target fails)

Instances are random but seeded: GPU sizes uniform in 4..80 GB, service sizes
log-uniform in 200 MB..40 GB, scaled so the services fill 70% or 90% of the total
capacity. 1 GB = 1000 MB.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from dataclasses import dataclass

from bench.reference import brute_force_min_max, lower_bound
from gpuconfig.domain import Gpu, Service, ServiceRequest, StrategyName
from gpuconfig.strategies import plan

SEED = 20250101
LOADS = (0.70, 0.90)
MIN_GPU_MB, MAX_GPU_MB = 4_000, 80_000
MIN_SERVICE_MB, MAX_SERVICE_MB = 200, 40_000

GAP_TARGET = 1.005
TIME_TARGETS_S = {(8, 64): 0.100, (16, 256): 1.0}


@dataclass(frozen=True)
class Instance:
    """Capacities and demands in MB."""

    caps: tuple[int, ...]
    demands: tuple[int, ...]

    def gpus(self) -> list[Gpu]:
        """As detection would report them."""
        return [Gpu(i, f"GPU{i}", cap, compute_capability="8.6") for i, cap in enumerate(self.caps)]

    def requests(self) -> list[ServiceRequest]:
        """One unpinned, enabled service per demand."""
        return [ServiceRequest(Service(f"s{i}", "model", d)) for i, d in enumerate(self.demands)]


def make_instance(rng: random.Random, gpu_count: int, service_count: int, load: float) -> Instance:
    """Random instance whose services total about `load` times the GPUs' capacity."""
    caps = tuple(rng.randint(MIN_GPU_MB, MAX_GPU_MB) for _ in range(gpu_count))
    # A service bigger than every GPU could never fit; cap the sizes at the largest GPU.
    top = min(MAX_SERVICE_MB, max(caps))
    raw = [
        math.exp(rng.uniform(math.log(MIN_SERVICE_MB), math.log(MAX_SERVICE_MB)))
        for _ in range(service_count)
    ]
    target = load * sum(caps)

    def sized(scale: float) -> list[int]:
        return [round(min(top, max(MIN_SERVICE_MB, r * scale))) for r in raw]

    # Bisect the scale so the clipped sizes add up to the target load.
    low, high = 1e-6, 1e6
    for _ in range(100):
        mid = math.sqrt(low * high)
        if sum(sized(mid)) < target:
            low = mid
        else:
            high = mid
    return Instance(caps, tuple(sized(high)))


def run_balanced(instance: Instance) -> tuple[float, float]:
    """(highest utilization, seconds) of the balanced strategy on the instance."""
    gpus, requests = instance.gpus(), instance.requests()
    start = time.perf_counter()
    result = plan(StrategyName.BALANCED, gpus, requests)
    elapsed = time.perf_counter() - start
    loads = [0] * len(instance.caps)
    for request in requests:
        loads[result.assignments[request.service.name]] += request.service.vram_estimate_mb
    return max(load / cap for load, cap in zip(loads, instance.caps, strict=True)), elapsed


def main() -> int:
    """Run all sections, print the tables and verdicts; return the exit status."""
    rng = random.Random(SEED)
    verdicts: list[tuple[str, bool]] = []
    began = time.perf_counter()

    print(f"Balanced strategy benchmark (seed {SEED}; GPUs 4-80 GB, services 0.2-40 GB)")
    print()
    print("(1) Small instances, reference: exact optimum by brute force (bench/reference.py)")
    header = f"{'GPUs x svcs':>11} {'load':>5} {'n':>3} {'optimal':>8} {'fit found/exists':>17}"
    print(header + f" {'worst gap':>10} {'worst time':>11}")
    all_optimal = all_fit = True
    for gpu_count, service_count, count in ((3, 10, 100), (4, 8, 100)):
        for load in LOADS:
            optimal = fit_exists = fit_found = 0
            worst_gap = worst_time = 0.0
            for _ in range(count):
                instance = make_instance(rng, gpu_count, service_count, load)
                exact, _ = brute_force_min_max(instance.caps, instance.demands)
                got, seconds = run_balanced(instance)
                gap = got / exact
                optimal += gap <= 1 + 1e-9
                fit_exists += exact <= 1.0
                fit_found += exact <= 1.0 and got <= 1.0
                worst_gap, worst_time = max(worst_gap, gap), max(worst_time, seconds)
            all_optimal &= optimal == count
            all_fit &= fit_found == fit_exists
            print(
                f"{gpu_count:>5} x {service_count:<3} {load:>5.0%} {count:>3} "
                f"{optimal:>4}/{count:<3} {fit_found:>8}/{fit_exists:<8} "
                f"{worst_gap:>9.4f}x {worst_time * 1000:>8.1f} ms"
            )
    verdicts.append(
        ("small: max utilization equals the exact optimum, every instance", all_optimal)
    )
    verdicts.append(("small: within capacity whenever some placement is", all_fit))

    print()
    print(
        "(2)/(3) Larger instances, reference: lower bound = max(total demand / total capacity,\n"
        "        biggest service / biggest GPU, capacity-restricted bound) (bench/reference.py);\n"
        "        gap = balanced's max utilization / lower bound (>= the gap to the optimum)"
    )
    print(
        f"{'GPUs x svcs':>11} {'load':>5} {'n':>3} {'median gap':>11} {'worst gap':>10} "
        f"{'median time':>12} {'worst time':>11}"
    )
    for (gpu_count, service_count), count in (((8, 64), 200), ((16, 256), 50)):
        gaps: list[float] = []
        times: list[float] = []
        for load in LOADS:
            row_gaps: list[float] = []
            row_times: list[float] = []
            for _ in range(count):
                instance = make_instance(rng, gpu_count, service_count, load)
                got, seconds = run_balanced(instance)
                row_gaps.append(got / lower_bound(instance.caps, instance.demands))
                row_times.append(seconds)
            print(
                f"{gpu_count:>5} x {service_count:<3} {load:>5.0%} {count:>3} "
                f"{statistics.median(row_gaps):>10.4f}x {max(row_gaps):>9.4f}x "
                f"{statistics.median(row_times) * 1000:>9.1f} ms {max(row_times) * 1000:>8.1f} ms"
            )
            gaps += row_gaps
            times += row_times
        limit = TIME_TARGETS_S[(gpu_count, service_count)]
        verdicts.append(
            (f"{gpu_count}x{service_count}: worst gap <= {GAP_TARGET}x", max(gaps) <= GAP_TARGET)
        )
        verdicts.append(
            (f"{gpu_count}x{service_count}: worst time < {limit * 1000:.0f} ms", max(times) < limit)
        )

    print()
    for label, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    print(f"\nTotal bench time: {time.perf_counter() - began:.1f} s")
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
