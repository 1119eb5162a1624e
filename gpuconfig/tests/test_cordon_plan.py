"""The planner with a GPU in maintenance (pure): no new services on it in any strategy, the
services on it now stay until it is drained, and a drain moves them elsewhere."""

from __future__ import annotations

import pytest

from gpuconfig.domain import Gpu, Service, ServiceRequest, StrategyName
from gpuconfig.strategies import StrategyError, plan
from gpuconfig.strategies import planner as bare_planner

GPUS = (
    Gpu(0, "NVIDIA H100", 80_000),
    Gpu(1, "NVIDIA H100", 80_000, cordoned=True),
    Gpu(2, "NVIDIA L40S", 46_000),
)
REQUESTS = tuple(
    ServiceRequest(Service(name, "model", mb))
    for name, mb in (("llm", 30_000), ("detector", 8_000), ("clip", 4_000), ("embed", 2_000))
)
AUTOMATIC = [s for s in StrategyName if s is not StrategyName.MANUAL]


@pytest.mark.parametrize("strategy", AUTOMATIC)
def test_no_strategy_places_a_service_on_a_cordoned_gpu(strategy: StrategyName) -> None:
    result = plan(strategy, GPUS, REQUESTS, reserve_mb=0)

    assert 1 not in result.assignments.values()
    assert "GPU 1 is in maintenance: it takes no new services" in result.notes


@pytest.mark.parametrize("strategy", AUTOMATIC)
def test_services_on_a_cordoned_gpu_stay_until_it_is_drained(strategy: StrategyName) -> None:
    current = {"llm": 0, "detector": 1, "clip": 1, "embed": 2}

    kept = plan(strategy, GPUS, REQUESTS, reserve_mb=0, current=current)
    drained = plan(strategy, GPUS, REQUESTS, reserve_mb=0, current=current, drain={1})

    assert (kept.assignments["detector"], kept.assignments["clip"]) == (1, 1)
    assert 1 not in drained.assignments.values()
    assert set(drained.assignments) == set(current)


def test_without_a_cordoned_gpu_the_plan_is_the_bare_planners() -> None:
    open_gpus = tuple(Gpu(g.index, g.name, g.vram_total_mb) for g in GPUS)

    for strategy in AUTOMATIC:
        assert plan(strategy, open_gpus, REQUESTS, reserve_mb=0) == bare_planner.plan(
            strategy, open_gpus, REQUESTS, reserve_mb=0
        )


def test_every_gpu_cordoned_says_so() -> None:
    closed = tuple(Gpu(g.index, g.name, g.vram_total_mb, cordoned=True) for g in GPUS)

    with pytest.raises(StrategyError, match="Every GPU is in maintenance: cannot place llm"):
        plan(StrategyName.BALANCED, closed, REQUESTS, reserve_mb=0)
