"""Several GPU hosts: a service goes only to a GPU of a host whose compose file defines it
(`Service.hosts`, `Gpu.host`), under every automatic strategy; balanced keeps its proven
optimum under that constraint (checked by brute force); without hosts nothing changes.

Pure tests: no database, no Django models; the planner is plain dataclasses in and out.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuconfig.domain import Gpu, Plan, Service, ServiceRequest, StrategyName, demand_mb
from gpuconfig.strategies import plan

AUTOMATIC = [s for s in StrategyName if s is not StrategyName.MANUAL]
RESERVE_MB = 512


def _gpu(host_number: int, index: int, vram_mb: int, **fields: Any) -> Gpu:
    """A GPU with its global index (host number x 100 + its index there); host 0 is local."""
    host = "" if host_number == 0 else f"host-{host_number}"
    return Gpu(
        host_number * 100 + index, f"GPU {host_number}.{index}", vram_mb, host=host, **fields
    )


def _service(name: str, mb: int, hosts: set[str] | None, **fields: Any) -> ServiceRequest:
    service = Service(
        name, "model", mb, hosts=None if hosts is None else frozenset(hosts), **fields
    )
    return ServiceRequest(service)


def _host_of(gpus: list[Gpu], result: Plan) -> dict[str, str]:
    by_index = {g.index: g.host for g in gpus}
    return {name: by_index[index] for name, index in result.assignments.items()}


def _assert_on_own_hosts(gpus: list[Gpu], requests: list[ServiceRequest], result: Plan) -> None:
    hosts = _host_of(gpus, result)
    for request in requests:
        allowed = request.service.hosts
        if request.pinned_gpu is None and allowed is not None and request.service.name in hosts:
            assert hosts[request.service.name] in allowed, (request.service.name, result)


# --- each strategy keeps services on their hosts ------------------------------------------

# The local host has one big fast card, host-1 two small slower ones: left to themselves the
# strategies would put the big services on the local card.
GPUS = [
    _gpu(0, 0, 48_000, compute_capability="9.0"),
    _gpu(1, 0, 16_000, compute_capability="8.6"),
    _gpu(1, 1, 12_000, compute_capability="8.6"),
]


@pytest.mark.parametrize("strategy", AUTOMATIC, ids=str)
def test_every_strategy_keeps_services_on_their_hosts(strategy: StrategyName) -> None:
    requests = [
        _service("llm", 14_000, {"host-1"}, role="llm"),
        _service("critical", 6_000, {"host-1"}, role="critical"),
        _service("local-only", 9_000, {""}),
        _service("both", 5_000, {"", "host-1"}),
        _service("anywhere", 3_000, None),
    ]
    result = plan(strategy, GPUS, requests, reserve_mb=RESERVE_MB)
    _assert_on_own_hosts(GPUS, requests, result)
    hosts = _host_of(GPUS, result)
    assert hosts["llm"] == "host-1"
    assert hosts["critical"] == "host-1"
    assert hosts["local-only"] == ""
    assert set(result.assignments) == {r.service.name for r in requests}


def test_latency_puts_the_critical_path_on_the_fastest_gpu_of_its_host() -> None:
    gpus = [
        _gpu(0, 0, 24_000, compute_capability="9.0"),
        _gpu(1, 0, 24_000, compute_capability="8.6"),
        _gpu(1, 1, 24_000, compute_capability="8.9"),
    ]
    requests = [
        _service("critical", 4_000, {"host-1"}, role="critical"),
        _service("helper", 4_000, {"host-1"}),
    ]
    result = plan(StrategyName.LATENCY_OPTIMIZED, gpus, requests, reserve_mb=RESERVE_MB)
    # GPU 101 (8.9) is host-1's fastest; the helper keeps off it.
    assert result.assignments == {"critical": 101, "helper": 100}


def test_isolation_gives_the_llm_the_largest_gpu_of_its_host_alone() -> None:
    gpus = [_gpu(0, 0, 80_000), _gpu(1, 0, 24_000), _gpu(1, 1, 48_000)]
    requests = [
        _service("llm", 20_000, {"host-1"}, role="llm"),
        _service("small", 2_000, {"host-1"}),
        _service("local", 2_000, {""}),
    ]
    result = plan(StrategyName.ISOLATION_FIRST, gpus, requests, reserve_mb=RESERVE_MB)
    assert result.assignments == {"llm": 101, "small": 100, "local": 0}


def test_a_service_stays_on_its_host_even_over_capacity() -> None:
    # Host-1's one card cannot hold the service; the local card could, but it is not
    # defined there: it is listed over capacity on its own host instead.
    gpus = [_gpu(0, 0, 80_000), _gpu(1, 0, 8_000)]
    requests = [_service("big", 20_000, {"host-1"}), _service("free", 10_000, None)]
    for strategy in AUTOMATIC:
        result = plan(strategy, gpus, requests, reserve_mb=RESERVE_MB)
        assert result.assignments["big"] == 100, strategy
        assert result.over_capacity == ("big",), strategy


def test_a_service_whose_hosts_have_no_gpu_here_is_not_placed() -> None:
    requests = [_service("elsewhere", 4_000, {"host-9"}), _service("here", 4_000, None)]
    for strategy in AUTOMATIC:
        result = plan(strategy, GPUS, requests, reserve_mb=RESERVE_MB)
        assert "elsewhere" not in result.assignments, strategy
        assert "here" in result.assignments
        assert any("elsewhere is defined only on host-9" in note for note in result.notes)


def test_a_pin_to_another_hosts_gpu_stands_with_a_note() -> None:
    pinned = replace(_service("pinned", 4_000, {"host-1"}), pinned_gpu=0)
    for strategy in StrategyName:
        result = plan(strategy, GPUS, [pinned], reserve_mb=RESERVE_MB)
        assert result.assignments == {"pinned": 0}, strategy
        assert (
            "pinned is pinned to GPU 0 on the local host, which does not define it (it is "
            "defined on host-1): the pin stands."
        ) in result.notes, strategy


def test_least_disruption_moves_a_service_off_a_host_that_does_not_define_it() -> None:
    requests = [_service("svc", 4_000, {"host-1"}), _service("other", 4_000, None)]
    for strategy in AUTOMATIC:
        result = plan(
            strategy, GPUS, requests, reserve_mb=RESERVE_MB, current={"svc": 0, "other": 0}
        )
        assert _host_of(GPUS, result)["svc"] == "host-1", strategy
        assert result.disruption is not None
        reasons = dict(zip(result.disruption.moved, result.disruption.reasons, strict=True))
        assert reasons["svc"] == "GPU 0 is on the local host, which does not define it"


def test_hosts_and_the_vendor_rule_together() -> None:
    gpus = [
        _gpu(0, 0, 24_000, vendor="amd"),
        _gpu(1, 0, 24_000),
        _gpu(1, 1, 24_000, vendor="amd"),
    ]
    requests = [
        _service("rocm-local", 4_000, {""}, accelerator="rocm"),
        _service("rocm-host-1", 4_000, {"host-1"}, accelerator="rocm"),
        # Its host's only GPU is AMD: nowhere to go.
        _service("cuda-local", 4_000, {""}, accelerator="cuda"),
        _service("any-host-1", 4_000, {"host-1"}, accelerator="any"),
    ]
    for strategy in AUTOMATIC:
        result = plan(strategy, gpus, requests, reserve_mb=RESERVE_MB)
        assert result.assignments["rocm-local"] == 0, strategy
        assert result.assignments["rocm-host-1"] == 101, strategy
        assert result.assignments["any-host-1"] in (100, 101), strategy
        assert "cuda-local" not in result.assignments, strategy


# --- balanced against brute force ---------------------------------------------------------

HOSTS = ("", "host-1", "host-2")


@st.composite
def instances(draw: st.DrawFn) -> tuple[list[Gpu], list[ServiceRequest]]:
    """2-3 hosts, 2-4 GPUs, up to 6 services, each defined on a non-empty set of hosts."""
    host_count = draw(st.integers(2, 3))
    gpu_count = draw(st.integers(2, 4))
    gpus = []
    for index in range(gpu_count):
        host = draw(st.integers(0, host_count - 1))
        size = draw(st.sampled_from((8_000, 12_000, 16_000, 24_000)))
        gpus.append(Gpu(host * 100 + index, f"GPU {index}", size, host=HOSTS[host]))
    requests = []
    for k in range(draw(st.integers(1, 6))):
        defined = draw(
            st.sets(st.sampled_from(HOSTS[:host_count]), min_size=1, max_size=host_count)
        )
        mb = draw(st.integers(500, 12_000))
        requests.append(_service(f"s{k}", mb, defined))
    return gpus, requests


def _brute_force(gpus: list[Gpu], requests: list[ServiceRequest]) -> Fraction | None:
    """The least highest utilization of a plan within capacity that keeps every service
    on its hosts (services with no GPU of their hosts are left out); None: none fits."""
    options = []
    for request in requests:
        open_ = [p for p, g in enumerate(gpus) if g.host in (request.service.hosts or ())]
        if open_:
            options.append((demand_mb(request), open_))
    best: Fraction | None = None
    for choice in itertools.product(*(o for _, o in options)):
        loads = [0] * len(gpus)
        for (mb, _), p in zip(options, choice, strict=True):
            loads[p] += mb
        if any(load > g.vram_total_mb for load, g in zip(loads, gpus, strict=True)):
            continue
        value = max(Fraction(load, g.vram_total_mb) for load, g in zip(loads, gpus, strict=True))
        best = value if best is None else min(best, value)
    return best


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_balanced_finds_the_proven_optimum_within_hosts(
    instance: tuple[list[Gpu], list[ServiceRequest]],
) -> None:
    gpus, requests = instance
    result = plan(StrategyName.BALANCED, gpus, requests, reserve_mb=RESERVE_MB)
    _assert_on_own_hosts(gpus, requests, result)
    optimum = _brute_force(gpus, requests)
    placed_anywhere = {
        r.service.name for r in requests if any(g.host in (r.service.hosts or ()) for g in gpus)
    }
    assert set(result.assignments) == placed_anywhere
    if optimum is None:
        assert result.over_capacity  # not everything fits: something is listed
        return
    loads = [0] * len(gpus)
    position = {g.index: p for p, g in enumerate(gpus)}
    for request in requests:
        if request.service.name in result.assignments:
            loads[position[result.assignments[request.service.name]]] += demand_mb(request)
    value = max(Fraction(load, g.vram_total_mb) for load, g in zip(loads, gpus, strict=True))
    assert result.over_capacity == ()
    assert value == optimum
    assert result.optimality is not None
    assert result.optimality.proven
    assert result.optimality.lower_bound <= float(optimum) + 1e-12


# --- without hosts nothing changes -------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), st.sampled_from(AUTOMATIC))
def test_a_constraint_that_allows_every_gpu_changes_nothing(
    instance: tuple[list[Gpu], list[ServiceRequest]], strategy: StrategyName
) -> None:
    # The same services without hosts, on GPUs without host names: the plan as before.
    gpus, requests = instance
    every_host = frozenset(g.host for g in gpus)
    unconstrained = [replace(r, service=replace(r.service, hosts=None)) for r in requests]
    everywhere = [replace(r, service=replace(r.service, hosts=every_host)) for r in requests]
    nameless = [replace(g, host="") for g in gpus]
    reference = plan(strategy, nameless, unconstrained, reserve_mb=RESERVE_MB)
    assert plan(strategy, gpus, unconstrained, reserve_mb=RESERVE_MB) == reference
    assert plan(strategy, gpus, everywhere, reserve_mb=RESERVE_MB) == reference


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), st.sampled_from(AUTOMATIC))
def test_the_rule_strategies_keep_services_on_their_hosts(
    instance: tuple[list[Gpu], list[ServiceRequest]], strategy: StrategyName
) -> None:
    gpus, requests = instance
    result = plan(strategy, gpus, requests, reserve_mb=RESERVE_MB)
    _assert_on_own_hosts(gpus, requests, result)
