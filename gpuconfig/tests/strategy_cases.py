"""What the strategy tests share: the reference hardware and services of the design, and
random inventories with the hard rules each strategy must keep (written from the strategy
descriptions, independently of the implementation).
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from gpuconfig.domain import (
    Gpu,
    Plan,
    Service,
    ServiceRequest,
    StrategyName,
    demand_mb,
)
from gpuconfig.strategies import fastest_gpu, largest_gpu

AUTOMATIC = [s for s in StrategyName if s is not StrategyName.MANUAL]


A5500 = Gpu(0, "NVIDIA RTX A5500", 24564, compute_capability="8.6")


A400 = Gpu(1, "NVIDIA RTX A400", 4094, compute_capability="8.6")


REFERENCE_GPUS = [A5500, A400]


LLM = Service("ai-llm", "Nemotron-3-Nano-30B (Q4_K_M)", 21700, "llm")


YOLO = Service("ai-yolo26", "YOLO26", 650, "critical")


FLORENCE = Service("ai-florence", "Florence-2-Large", 1500)


CLIP = Service("ai-clip", "CLIP ViT-L", 1200)
# As in docker-compose.prod.yml: the zoo takes a budget and works with 2000 MiB at the least.


ENRICHMENT = Service(
    "ai-enrichment",
    "Model Zoo (9 models)",
    6800,
    budget_env="VRAM_BUDGET_GB",
    vram_min_mb=2000,
)


REFERENCE_SERVICES = [LLM, YOLO, FLORENCE, CLIP, ENRICHMENT]
# The System setting's default: the validator keeps it free beside an adjusted budget.


REFERENCE_RESERVE_MB = 512


def requests(*services: Service, **pins: int) -> list[ServiceRequest]:
    """Enabled requests; keyword arguments pin a service (dashes as underscores)."""
    return [ServiceRequest(s, pinned_gpu=pins.get(s.name.replace("-", "_"))) for s in services]


def loads_of(result: Plan, reqs: Sequence[ServiceRequest]) -> dict[int, int]:
    """MB per GPU index under the plan."""
    loads: dict[int, int] = {}
    for r in reqs:
        if r.service.name in result.assignments:
            gpu = result.assignments[r.service.name]
            loads[gpu] = loads.get(gpu, 0) + demand_mb(r)
    return loads


ROLES = ("llm", "critical", "standard", "standard")


@st.composite
def inventories(
    draw: st.DrawFn, max_gpus: int = 8, max_services: int = 10
) -> tuple[list[Gpu], list[ServiceRequest]]:
    """1..max_gpus GPUs of 4000..80000 MiB (some absent), services of 200..40000 MiB with pins."""
    gpu_count = draw(st.integers(1, max_gpus))
    gpus = [
        Gpu(
            index=i,
            name=f"GPU {i}",
            vram_total_mb=draw(st.integers(4000, 80000)),
            compute_capability=draw(st.sampled_from([None, "7.5", "8.6", "8.9", "9.0", "12.0"])),
            present=draw(st.booleans()) if i else True,  # keep at least one present
        )
        for i in range(gpu_count)
    ]
    service_count = draw(st.integers(0, max_services))
    reqs = []
    for i in range(service_count):
        service = Service(
            name=f"svc-{i}",
            model=f"model {i}",
            vram_estimate_mb=draw(st.integers(200, 40000)),
            role=draw(st.sampled_from(ROLES)),
        )
        pinned = draw(st.none() | st.none() | st.integers(0, gpu_count))  # gpu_count: missing
        reqs.append(ServiceRequest(service, pinned_gpu=pinned, enabled=draw(st.booleans())))
    return gpus, reqs


def allowed_gpus(
    strategy: StrategyName, gpus: Sequence[Gpu], reqs: Sequence[ServiceRequest]
) -> dict[str, list[int]]:
    """GPU indexes each unpinned enabled service may use under the strategy's hard rules.

    Written from the strategy descriptions, independently of the implementation.
    """
    present = [g for g in gpus if g.present]
    everywhere = [g.index for g in present]
    movable = [r for r in reqs if r.enabled and r.pinned_gpu is None]
    if strategy is StrategyName.LATENCY_OPTIMIZED:
        fast = fastest_gpu(present).index
        return {
            r.service.name: [fast] if r.service.role in ("llm", "critical") else everywhere
            for r in movable
        }
    if strategy is StrategyName.ISOLATION_FIRST and len(present) > 1:
        big = largest_gpu(present).index
        llm_gpus = {big} if any(r.service.role == "llm" for r in movable) else set()
        llm_gpus |= {
            r.pinned_gpu
            for r in reqs
            if r.enabled and r.service.role == "llm" and r.pinned_gpu in everywhere
        }
        shared = [i for i in everywhere if i not in llm_gpus] or everywhere
        return {r.service.name: [big] if r.service.role == "llm" else shared for r in movable}
    return {r.service.name: everywhere for r in movable}


def check_plan_shape(
    strategy: StrategyName, gpus: Sequence[Gpu], reqs: Sequence[ServiceRequest], result: Plan
) -> None:
    """Invariants every automatic plan satisfies."""
    enabled = [r for r in reqs if r.enabled]
    present = {g.index: g for g in gpus if g.present}
    allowed = allowed_gpus(strategy, gpus, reqs)
    # Every enabled service exactly once (dict keys), disabled ones absent.
    assert list(result.assignments) == [r.service.name for r in enabled]
    for r in enabled:
        chosen = result.assignments[r.service.name]
        if r.pinned_gpu is not None:
            assert chosen == r.pinned_gpu
        else:
            assert chosen in allowed[r.service.name]
    assert set(result.over_capacity) <= set(allowed)
    # Listed services sit on an overloaded GPU; an overloaded GPU with services the
    # strategy placed lists at least one of them.
    loads = loads_of(result, enabled)
    for name in result.over_capacity:
        where = result.assignments[name]
        assert loads[where] > present[where].vram_total_mb
    for index, gpu in present.items():
        placed_here = [n for n in allowed if result.assignments[n] == index]
        if loads.get(index, 0) > gpu.vram_total_mb and placed_here:
            pinned_load = sum(demand_mb(r) for r in enabled if r.pinned_gpu == index)
            # Unless the pins alone overflow it, something placed here is listed.
            if pinned_load <= gpu.vram_total_mb:
                assert set(placed_here) & set(result.over_capacity)


def plain(
    caps: Sequence[int], demands: Sequence[int], **pins: int
) -> tuple[list[Gpu], list[ServiceRequest]]:
    """GPUs of the given MiB and services s0, s1, ...; keyword arguments pin (s4=2)."""
    gpus = [Gpu(i, f"GPU {i}", c) for i, c in enumerate(caps)]
    reqs = [
        ServiceRequest(Service(f"s{i}", "m", d), pinned_gpu=pins.get(f"s{i}"))
        for i, d in enumerate(demands)
    ]
    return gpus, reqs


def highest_utilization(gpus: Sequence[Gpu], reqs: Sequence[ServiceRequest], result: Plan) -> float:
    """Highest load / capacity over the present GPUs."""
    loads = loads_of(result, [r for r in reqs if r.enabled])
    return max(loads.get(g.index, 0) / g.vram_total_mb for g in gpus if g.present)
