"""Benchmark planning over several GPU hosts: each service only on the hosts that define it.

Run: .venv/bin/python -m bench.bench_hosts_planning   (exits non-zero when the target fails)

Instances are random but seeded: 1, 10 and 50 hosts of 8 GPUs each (sizes drawn from common
cards, 16 to 80 GiB), 400 services in all, each defined on 1-3 random hosts (with one host:
that one), demands log-uniform in 300..16,000 MiB scaled to a share of the total capacity
("load", 40% and 60%), then cut to 16,000 MiB so that every service fits every card alone
(with many hosts the cut lowers the load: "real" is the services' total over the capacity).
5% of the services are LLMs and 10% critical, so that latency_optimized and
isolation_first have something to do. GPUs carry the global index (host number x 100 + the
index on the host) and the host's name, as the product plans them.

Printed per size: each automatic strategy's planning time (best of `REPEATS`, the planner's
default time budget), and balanced's highest utilization, its proven lower bound, and whether
its plan is proven optimal. Every plan is checked to keep every service on its own hosts.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
import time

from gpuconfig.domain import Gpu, Plan, Service, ServiceRequest, StrategyName
from gpuconfig.strategies import DEFAULT_TIME_BUDGET_MS, plan

SEED = 20260611
GPUS_PER_HOST = 8
SERVICES = 400
HOST_COUNTS = (1, 10, 50)
CARDS_MB = (16_376, 24_564, 49_140, 81_920)
MIN_SERVICE_MB, MAX_SERVICE_MB = 300, 16_000
LOADS = (0.4, 0.6)  # the services' total over the total capacity
REPEATS = 3
NO_BUDGETS_RESERVE_MB = 0  # no service takes a budget: the reserve plays no part
BALANCED_TARGET_S = 1.0  # balanced at 50 hosts, with the default time budget


def host_name(number: int) -> str:
    """Host 0 is the local one (""), the others by name."""
    return "" if number == 0 else f"gpu-host-{number:02d}"


def instance(hosts: int, load: float, rng: random.Random) -> tuple[list[Gpu], list[ServiceRequest]]:
    """The GPUs of `hosts` hosts and `SERVICES` services defined on 1-3 of them."""
    gpus = [
        Gpu(
            index=h * 100 + i,
            name=f"GPU {h}.{i}",
            vram_total_mb=rng.choice(CARDS_MB),
            compute_capability=rng.choice(("8.6", "8.9", "9.0")),
            host=host_name(h),
        )
        for h in range(hosts)
        for i in range(GPUS_PER_HOST)
    ]
    raw = [
        math.exp(rng.uniform(math.log(MIN_SERVICE_MB), math.log(MAX_SERVICE_MB)))
        for _ in range(SERVICES)
    ]
    scale = load * sum(g.vram_total_mb for g in gpus) / sum(raw)
    requests = []
    for k, size in enumerate(raw):
        defined = rng.sample(range(hosts), min(hosts, rng.randint(1, 3)))
        role = "llm" if k % 20 == 0 else "critical" if k % 10 == 5 else "standard"
        requests.append(
            ServiceRequest(
                Service(
                    f"svc-{k:03d}",
                    "model",
                    max(1, min(round(size * scale), MAX_SERVICE_MB)),
                    role=role,  # type: ignore[arg-type]
                    hosts=frozenset(host_name(h) for h in defined),
                )
            )
        )
    return gpus, requests


def check_hosts(result: Plan, gpus: list[Gpu], requests: list[ServiceRequest]) -> None:
    """Every placed service is on a GPU of a host that defines it."""
    host_of = {g.index: g.host for g in gpus}
    for request in requests:
        hosts = request.service.hosts
        index = result.assignments.get(request.service.name)
        if index is not None and hosts is not None and host_of[index] not in hosts:
            raise AssertionError(f"{request.service.name} put on host {host_of[index]!r}")


def timed(
    strategy: StrategyName, gpus: list[Gpu], requests: list[ServiceRequest]
) -> tuple[float, Plan]:
    """Best of `REPEATS` planning times (seconds), and the plan (equal inputs, equal plans)."""
    best = math.inf
    result = None
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = plan(strategy, gpus, requests, reserve_mb=NO_BUDGETS_RESERVE_MB)
        best = min(best, time.perf_counter() - started)
    assert result is not None
    return best, result


def main() -> int:
    rng = random.Random(SEED)
    strategies = [s for s in StrategyName if s is not StrategyName.MANUAL]
    print(
        f"{SERVICES} services, {GPUS_PER_HOST} GPUs per host, "
        f"time budget {DEFAULT_TIME_BUDGET_MS} ms, best of {REPEATS}"
    )
    header = (
        f"{'load':>4} {'real':>4} {'hosts':>5} {'GPUs':>5} "
        + " ".join(f"{s.value + ' ms':>22}" for s in strategies)
        + f" {'balanced max':>13} {'bound':>7} {'proven':>7} {'over':>5}"
    )
    print(header)
    failed = False
    for load, hosts in itertools.product(LOADS, HOST_COUNTS):
        gpus, requests = instance(hosts, load, rng)
        real = sum(r.service.vram_estimate_mb for r in requests) / sum(
            g.vram_total_mb for g in gpus
        )
        times = []
        balanced: Plan | None = None
        balanced_s = 0.0
        for strategy in strategies:
            seconds, result = timed(strategy, gpus, requests)
            check_hosts(result, gpus, requests)
            times.append(seconds)
            if strategy is StrategyName.BALANCED:
                balanced, balanced_s = result, seconds
        assert balanced is not None and balanced.optimality is not None
        optimality = balanced.optimality
        print(
            f"{load:>4.0%} {real:>4.0%} {hosts:>5} {len(gpus):>5} "
            + " ".join(f"{s * 1000:>22.0f}" for s in times)
            + f" {optimality.max_utilization:>13.4f} {optimality.lower_bound:>7.4f}"
            + f" {'yes' if optimality.proven else 'no':>7} {len(balanced.over_capacity):>5}"
        )
        if hosts == max(HOST_COUNTS) and balanced_s > BALANCED_TARGET_S:
            failed = True
    print(
        f"target: balanced <= {BALANCED_TARGET_S:.1f} s at {max(HOST_COUNTS)} hosts: "
        + ("FAILED" if failed else "met")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
