"""The five strategies: reference hardware by hand, random inventories by hypothesis.

Pure tests: no database, no Django models; the planner is plain dataclasses in and out.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.reference import Harm, brute_force_least_harm, brute_force_min_max, cpsat_least_harm
from gpuconfig.domain import (
    RECOMMENDED_STRATEGY,
    STRATEGY_DESCRIPTIONS,
    STRATEGY_LABELS,
    Gpu,
    Plan,
    Service,
    ServiceRequest,
    StrategyName,
    WarningCode,
    demand_mb,
)
from gpuconfig.strategies import StrategyError, fastest_gpu, largest_gpu, plan
from gpuconfig.validation import evaluate

pytestmark: list[pytest.MarkDecorator] = []

AUTOMATIC = [s for s in StrategyName if s is not StrategyName.MANUAL]

# --- reference hardware and services (from the design) -------------------------------

A5500 = Gpu(0, "NVIDIA RTX A5500", 24564, compute_capability="8.6")
A400 = Gpu(1, "NVIDIA RTX A400", 4094, compute_capability="8.6")
REFERENCE_GPUS = [A5500, A400]

LLM = Service("ai-llm", "Nemotron-3-Nano-30B (Q4_K_M)", 21700, "llm")
YOLO = Service("ai-yolo26", "YOLO26", 650, "critical")
FLORENCE = Service("ai-florence", "Florence-2-Large", 1500)
CLIP = Service("ai-clip", "CLIP ViT-L", 1200)
# As in docker-compose.prod.yml: the zoo takes a budget and works with 2.0 GB at the least.
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


# --- names and descriptions ----------------------------------------------------------


def test_labels_descriptions_and_recommendation_cover_every_strategy() -> None:
    assert set(STRATEGY_LABELS) == set(StrategyName) == set(STRATEGY_DESCRIPTIONS)
    assert STRATEGY_LABELS[StrategyName.VRAM_BASED] == "VRAM-based"
    assert STRATEGY_DESCRIPTIONS[StrategyName.ISOLATION_FIRST] == "LLM gets dedicated GPU"
    assert RECOMMENDED_STRATEGY is StrategyName.VRAM_BASED


# --- manual ---------------------------------------------------------------------------


def test_manual_keeps_every_pin_even_over_capacity_or_on_missing_gpus() -> None:
    reqs = requests(LLM, CLIP, ENRICHMENT, ai_llm=1, ai_clip=7, ai_enrichment=1)
    result = plan(StrategyName.MANUAL, REFERENCE_GPUS, reqs, reserve_mb=REFERENCE_RESERVE_MB)
    assert result.assignments == {"ai-llm": 1, "ai-clip": 7, "ai-enrichment": 1}
    assert result.over_capacity == ()  # the user's call; the validator warns about it


def test_manual_rejects_an_unpinned_enabled_service_and_names_it() -> None:
    reqs = requests(LLM, CLIP, ai_llm=0)
    with pytest.raises(StrategyError, match="ai-clip"):
        plan(StrategyName.MANUAL, REFERENCE_GPUS, reqs, reserve_mb=REFERENCE_RESERVE_MB)


def test_manual_ignores_disabled_services_even_unpinned() -> None:
    reqs = [ServiceRequest(LLM, pinned_gpu=0), ServiceRequest(CLIP, enabled=False)]
    assert plan("manual", REFERENCE_GPUS, reqs, reserve_mb=REFERENCE_RESERVE_MB).assignments == {
        "ai-llm": 0
    }


# --- the automatic strategies on the reference hardware -------------------------------


def test_vram_based_on_reference_hardware() -> None:
    # Largest first onto the GPU with the most free MB: the LLM (21.7 GB) takes the
    # A5500 (2.9 GB left), then the enrichment zoo (6.8 GB) takes the A400, which has more
    # free MB (4.1 GB) although it cannot hold it. Florence (1.5) and CLIP (1.2) then see
    # more room on the A5500 than on the overfull A400, and so does YOLO (0.65), which no
    # longer fits there: 21.7 + 1.5 + 1.2 + 0.65 = 25.05 GB > 24.56 GB. At full estimates
    # (31.85 GB against 28.66) nothing fits; but the zoo works with 2.0 GB, so the rule's
    # order is searched again with the zoo at that minimum (plus the 0.5 GB reserve kept
    # beside a budget): YOLO, the first that no longer fits the A5500, goes to the A400,
    # where the zoo keeps 4094 - 650 - 512 = 2932 MB (a 2.9 GB budget).
    result = plan(
        StrategyName.VRAM_BASED,
        REFERENCE_GPUS,
        requests(*REFERENCE_SERVICES),
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    assert result.assignments == {
        "ai-llm": 0,
        "ai-yolo26": 1,
        "ai-florence": 0,
        "ai-clip": 0,
        "ai-enrichment": 1,
    }
    assert result.over_capacity == ()
    (note,) = result.notes
    assert "in the rule's order of preference" in note
    assert "with the budget of ai-enrichment adjusted down" in note


def test_vram_based_without_the_zoo_fits_and_evens_free_megabytes() -> None:
    # LLM -> A5500 (2864 MB free). Florence -> A400 (4094 > 2864 free). CLIP: 2864 free on
    # the A5500 vs 2594 on the A400 -> A5500 (1664 left). YOLO: 2594 > 1664 -> A400.
    result = plan(
        StrategyName.VRAM_BASED,
        REFERENCE_GPUS,
        requests(LLM, YOLO, FLORENCE, CLIP),
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    assert result.assignments == {"ai-llm": 0, "ai-yolo26": 1, "ai-florence": 1, "ai-clip": 0}
    assert result.over_capacity == ()


def test_latency_optimized_on_reference_hardware() -> None:
    # Both cards are Ampere (8.6), so the bigger A5500 is the fastest: the LLM and the
    # critical YOLO go there (22.35 GB). The rest prefers the A400: the zoo (6.8 GB) fits
    # neither card, so it goes to its preferred one, the A400. Florence (1.5) no longer
    # fits the A400 but fits the A5500's 2.2 GB left: the fallback. CLIP (1.2) then fits
    # neither, so it too goes to the preferred A400 (where the zoo's budget will shrink).
    result = plan(
        StrategyName.LATENCY_OPTIMIZED,
        REFERENCE_GPUS,
        requests(*REFERENCE_SERVICES),
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    assert result.assignments == {
        "ai-llm": 0,
        "ai-yolo26": 0,
        "ai-florence": 0,
        "ai-clip": 1,
        "ai-enrichment": 1,
    }
    # The zoo at its 2.0 GB minimum fits beside CLIP (1.2 + 2.0 + 0.5 reserve < 4.09 GB):
    # nothing is over capacity, and the rule's placement is kept as it is.
    assert result.over_capacity == ()
    assert result.notes == ()


def test_isolation_first_on_reference_hardware() -> None:
    # The LLM alone on the biggest card; everything else shares the A400, which cannot
    # hold the zoo even at its 2.0 GB minimum (0.65 + 1.5 + 1.2 + 2.0 + 0.5 reserve >
    # 4.09 GB), and the rule allows no other GPU: the zoo is what does not fit.
    result = plan(
        StrategyName.ISOLATION_FIRST,
        REFERENCE_GPUS,
        requests(*REFERENCE_SERVICES),
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    assert result.assignments == {
        "ai-llm": 0,
        "ai-yolo26": 1,
        "ai-florence": 1,
        "ai-clip": 1,
        "ai-enrichment": 1,
    }
    assert result.over_capacity == ("ai-enrichment",)
    assert result.notes == ()


def test_isolation_first_with_one_gpu_shares_it_and_says_so() -> None:
    result = plan(
        StrategyName.ISOLATION_FIRST,
        [A5500],
        requests(LLM, YOLO, CLIP),
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    assert result.assignments == {"ai-llm": 0, "ai-yolo26": 0, "ai-clip": 0}
    assert len(result.notes) == 1
    assert "Only one GPU" in result.notes[0]


def test_isolation_first_keeps_others_off_the_gpu_an_llm_is_pinned_to() -> None:
    big = Gpu(2, "NVIDIA H100", 81559, compute_capability="9.0")
    reqs = requests(LLM, CLIP, FLORENCE, ai_llm=1)
    result = plan(
        StrategyName.ISOLATION_FIRST, [A5500, A400, big], reqs, reserve_mb=REFERENCE_RESERVE_MB
    )
    # No unpinned LLM, so the H100 is free for the others; only the A400 is the LLM's.
    assert result.assignments["ai-llm"] == 1
    assert result.assignments["ai-clip"] != 1
    assert result.assignments["ai-florence"] != 1


def test_balanced_on_reference_hardware() -> None:
    # At full estimates the zoo fits nowhere: on the A400 it alone is 166%; next to the LLM
    # on the A5500 it is (21.7 + 6.8) / 24.564 = 116%, the least possible maximum. The
    # small services then go to the A400 (3.35 / 4.094 = 82%). Beside the LLM the zoo
    # still gets 24564 - 21700 - 512 = 2352 MB, above its 2.0 GB minimum: it fits.
    result = plan(
        StrategyName.BALANCED,
        REFERENCE_GPUS,
        requests(*REFERENCE_SERVICES),
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    assert result.assignments == {
        "ai-llm": 0,
        "ai-yolo26": 1,
        "ai-florence": 1,
        "ai-clip": 1,
        "ai-enrichment": 0,
    }
    assert result.over_capacity == ()
    (note,) = result.notes
    assert "the budget of ai-enrichment is adjusted down" in note


def test_balanced_evens_utilization_not_megabytes() -> None:
    # 8 GB and 24 GB cards, 16 x 1 GB: even utilization is 4 on the small card and 12 on
    # the big one (50% each); evening free MB would give 0 and 16 instead.
    gpus = [Gpu(0, "small", 8000), Gpu(1, "big", 24000)]
    reqs = [ServiceRequest(Service(f"s{i}", "m", 1000)) for i in range(16)]
    loads = loads_of(plan(StrategyName.BALANCED, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB), reqs)
    assert loads == {0: 4000, 1: 12000}
    loads = loads_of(
        plan(StrategyName.VRAM_BASED, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB), reqs
    )
    assert loads == {1: 16000}


def test_rule_strategies_rearrange_when_the_plain_rule_overloads_but_a_fit_exists() -> None:
    # Most-free-first puts 5 and 5 on different cards, then 4 and 3, and the last 3 no
    # longer fits anywhere, while {5, 5} + {4, 3, 3} fills both cards exactly.
    gpus = [Gpu(0, "a", 10000), Gpu(1, "b", 10000)]
    reqs = [
        ServiceRequest(Service(f"s{i}", "m", d))
        for i, d in enumerate([5000, 5000, 4000, 3000, 3000])
    ]
    result = plan(StrategyName.VRAM_BASED, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB)
    assert result.over_capacity == ()
    assert sorted(loads_of(result, reqs).values()) == [10000, 10000]
    assert result.notes and "rearranged" in result.notes[0]


def test_pinned_services_stay_put_and_count_as_load() -> None:
    gpus = [Gpu(0, "a", 24000), Gpu(1, "b", 24000)]
    reqs = requests(LLM, CLIP, FLORENCE, ai_llm=0)
    for strategy in AUTOMATIC:
        result = plan(strategy, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB)
        assert result.assignments["ai-llm"] == 0
        if strategy in (StrategyName.VRAM_BASED, StrategyName.BALANCED):
            # The pinned LLM fills GPU 0, so the small services go to GPU 1.
            assert result.assignments["ai-clip"] == result.assignments["ai-florence"] == 1


def test_pin_to_a_missing_gpu_is_kept_and_does_not_load_present_ones() -> None:
    gpus = [A5500, Gpu(1, "gone", 24564, present=False)]
    reqs = requests(LLM, CLIP, ai_clip=1)
    for strategy in AUTOMATIC:
        result = plan(strategy, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB)
        assert result.assignments == {"ai-llm": 0, "ai-clip": 1}
        assert result.over_capacity == ()


def test_absent_gpus_are_never_candidates() -> None:
    gpus = [Gpu(0, "gone", 80000, present=False), A400]
    for strategy in AUTOMATIC:
        result = plan(strategy, gpus, requests(CLIP, YOLO), reserve_mb=REFERENCE_RESERVE_MB)
        assert set(result.assignments.values()) == {1}


def test_no_gpus_is_an_error_when_something_must_be_placed() -> None:
    gone = [Gpu(0, "gone", 8000, present=False)]
    for strategy in AUTOMATIC:
        with pytest.raises(StrategyError, match="No GPUs"):
            plan(strategy, gone, requests(CLIP), reserve_mb=REFERENCE_RESERVE_MB)
        # Nothing to place (only a pin): an empty inventory is no obstacle.
        assert plan(
            strategy, [], requests(CLIP, ai_clip=0), reserve_mb=REFERENCE_RESERVE_MB
        ).assignments == {"ai-clip": 0}


@pytest.mark.parametrize(
    ("gpus", "reqs", "message"),
    [
        (REFERENCE_GPUS, requests(CLIP, CLIP), "listed twice"),
        ([A5500, Gpu(0, "twin", 8000)], requests(CLIP), "reported twice"),
        ([Gpu(0, "empty", 0)], requests(CLIP), "no VRAM"),
        (REFERENCE_GPUS, requests(Service("neg", "m", -1)), "negative"),
    ],
)
def test_invalid_input_raises_strategy_error(
    gpus: list[Gpu], reqs: list[ServiceRequest], message: str
) -> None:
    with pytest.raises(StrategyError, match=message):
        plan(StrategyName.BALANCED, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB)


def test_unknown_strategy_is_a_strategy_error() -> None:
    with pytest.raises(StrategyError, match="Unknown strategy"):
        plan("fastest", REFERENCE_GPUS, requests(CLIP), reserve_mb=REFERENCE_RESERVE_MB)


def test_fastest_gpu_compares_capability_numerically_then_size_then_index() -> None:
    turing = Gpu(0, "T4", 15360, compute_capability="7.5")
    blackwell = Gpu(1, "RTX 5090", 32607, compute_capability="12.0")
    hopper = Gpu(2, "H100", 81559, compute_capability="9.0")
    unknown = Gpu(3, "mystery", 99999)
    # "12.0" > "9.0" numerically although not as strings; unknown capability ranks last.
    assert fastest_gpu([turing, hopper, blackwell, unknown]) == blackwell
    # Same generation: the bigger card; same size too: the lower index.
    assert fastest_gpu([A400, A5500]) == A5500
    twin = Gpu(5, "twin", 24564, compute_capability="8.6")
    assert fastest_gpu([twin, A5500]) == A5500
    assert largest_gpu([turing, hopper, blackwell, unknown]) == unknown


# --- random inventories -----------------------------------------------------------------

ROLES = ("llm", "critical", "standard", "standard")


@st.composite
def inventories(
    draw: st.DrawFn, max_gpus: int = 8, max_services: int = 10
) -> tuple[list[Gpu], list[ServiceRequest]]:
    """1..max_gpus GPUs of 4..80 GB (some absent), services of 0.2..40 GB with pins."""
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


@settings(max_examples=150, deadline=None)
@given(inventories(), st.sampled_from(AUTOMATIC))
def test_every_enabled_service_is_placed_once_respecting_pins(
    inventory: tuple[list[Gpu], list[ServiceRequest]], strategy: StrategyName
) -> None:
    gpus, reqs = inventory
    result = plan(strategy, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB)
    check_plan_shape(strategy, gpus, reqs, result)
    assert plan(strategy, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB) == result  # deterministic


def brute_force(
    strategy: StrategyName, gpus: Sequence[Gpu], reqs: Sequence[ServiceRequest]
) -> float:
    """Least possible highest utilization over the present GPUs under the strategy's rules."""
    present = [g for g in gpus if g.present]
    position = {g.index: p for p, g in enumerate(present)}
    fixed = [0] * len(present)
    for r in reqs:
        if r.enabled and r.pinned_gpu in position:
            fixed[position[r.pinned_gpu]] += demand_mb(r)
    allowed = allowed_gpus(strategy, gpus, reqs)
    movable = [r for r in reqs if r.enabled and r.pinned_gpu is None]
    best, _ = brute_force_min_max(
        [g.vram_total_mb for g in present],
        [demand_mb(r) for r in movable],
        fixed,
        [[position[i] for i in allowed[r.service.name]] for r in movable],
    )
    return best


def highest_utilization(gpus: Sequence[Gpu], reqs: Sequence[ServiceRequest], result: Plan) -> float:
    """Highest load / capacity over the present GPUs."""
    loads = loads_of(result, [r for r in reqs if r.enabled])
    return max(loads.get(g.index, 0) / g.vram_total_mb for g in gpus if g.present)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inventories(max_gpus=4, max_services=7), st.sampled_from(AUTOMATIC))
def test_within_capacity_whenever_a_placement_within_capacity_exists(
    inventory: tuple[list[Gpu], list[ServiceRequest]], strategy: StrategyName
) -> None:
    gpus, reqs = inventory
    result = plan(strategy, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB)
    check_plan_shape(strategy, gpus, reqs, result)
    if brute_force(strategy, gpus, reqs) <= 1.0:
        assert highest_utilization(gpus, reqs, result) <= 1.0
        assert result.over_capacity == ()


def harm_of(gpus: Sequence[Gpu], reqs: Sequence[ServiceRequest], result: Plan) -> Harm:
    """The least-harm objective as the user sees the plan: what it flags and the loads."""
    present = [g for g in gpus if g.present]
    enabled = [r for r in reqs if r.enabled]
    flagged = [r for r in enabled if r.service.name in result.over_capacity]
    fitting = loads_of(result, [r for r in enabled if r not in flagged])
    pinned = loads_of(result, [r for r in enabled if r.pinned_gpu is not None])
    usable = [g for g in present if pinned.get(g.index, 0) <= g.vram_total_mb]
    return Harm(
        unfit=len(flagged),
        unfit_mb=sum(demand_mb(r) for r in flagged),
        max_utilization=max(
            (Fraction(fitting.get(g.index, 0), g.vram_total_mb) for g in usable),
            default=Fraction(0),
        ),
    )


def reference_harm(
    gpus: Sequence[Gpu], reqs: Sequence[ServiceRequest], solver: Callable[..., Harm]
) -> Harm:
    """The reference solver's least harm for balanced (every present GPU allowed)."""
    present = [g for g in gpus if g.present]
    position = {g.index: p for p, g in enumerate(present)}
    fixed = [0] * len(present)
    for r in reqs:
        if r.enabled and r.pinned_gpu in position:
            fixed[position[r.pinned_gpu]] += demand_mb(r)
    movable = [r for r in reqs if r.enabled and r.pinned_gpu is None]
    return solver([g.vram_total_mb for g in present], [demand_mb(r) for r in movable], fixed)


def overloaded_gpus(gpus: Sequence[Gpu], reqs: Sequence[ServiceRequest], result: Plan) -> int:
    """How many present GPUs the plan puts over capacity."""
    loads = loads_of(result, [r for r in reqs if r.enabled])
    return sum(1 for g in gpus if g.present and loads.get(g.index, 0) > g.vram_total_mb)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inventories(max_gpus=4, max_services=7))
def test_balanced_reaches_the_brute_force_least_harm_on_small_instances(
    inventory: tuple[list[Gpu], list[ServiceRequest]],
) -> None:
    # Fits: the least highest utilization. Does not fit: the fewest services flagged, the
    # least MB of them, then the least highest utilization of the rest; the overflow on
    # one GPU (one the pins overload already, if any).
    gpus, reqs = inventory
    result = plan(StrategyName.BALANCED, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB)
    check_plan_shape(StrategyName.BALANCED, gpus, reqs, result)
    reference = reference_harm(gpus, reqs, brute_force_least_harm)
    assert harm_of(gpus, reqs, result).key() == reference.key()
    present = [g for g in gpus if g.present]
    pinned = loads_of(result, [r for r in reqs if r.enabled and r.pinned_gpu is not None])
    pinned_over = sum(1 for g in present if pinned.get(g.index, 0) > g.vram_total_mb)
    expected = pinned_over + (1 if reference.unfit and not pinned_over else 0)
    if len(present) > pinned_over:  # otherwise nothing can fit anywhere
        assert overloaded_gpus(gpus, reqs, result) == expected
        assert result.optimality is not None
        assert result.optimality.proven and result.optimality.label == "optimal"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(4, 5).flatmap(
        lambda gpu_count: st.tuples(
            st.lists(st.integers(4000, 80000), min_size=gpu_count, max_size=gpu_count),
            st.lists(st.integers(200, 40000), min_size=10, max_size=15),
            st.lists(st.none() | st.integers(0, gpu_count - 1), min_size=15, max_size=15),
        )
    )
)
def test_balanced_against_cp_sat_on_mid_size_instances(
    instance: tuple[list[int], list[int], list[int | None]],
) -> None:
    # Past what a brute force can enumerate: an independent exact solver (CP-SAT). The
    # plan is never better than the optimum (the comparison is sound), within 0.5% of it,
    # exactly at it when it says "optimal", and its bound never exceeds it.
    caps, demands, pins = instance
    gpus = [Gpu(i, f"GPU {i}", c) for i, c in enumerate(caps)]
    reqs = [
        ServiceRequest(Service(f"s{i}", "m", d), pinned_gpu=pin)
        for i, (d, pin) in enumerate(zip(demands, pins, strict=False))
    ]
    result = plan(StrategyName.BALANCED, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB)
    check_plan_shape(StrategyName.BALANCED, gpus, reqs, result)
    reference = reference_harm(gpus, reqs, cpsat_least_harm)
    assert reference.proven, "CP-SAT ran out of time: the instance is too big for this test"
    got = harm_of(gpus, reqs, result)
    assert got.key() >= reference.key()
    assert (got.unfit, got.unfit_mb) == (reference.unfit, reference.unfit_mb)
    assert got.max_utilization <= reference.max_utilization * Fraction(1005, 1000)
    optimality = result.optimality
    if optimality is not None:
        assert optimality.lower_bound <= float(reference.max_utilization) * (1 + 1e-12)
        if optimality.proven:
            assert got.max_utilization == reference.max_utilization


# --- the reproducers (issue 9) ------------------------------------------------------


def plain(
    caps: Sequence[int], demands: Sequence[int], **pins: int
) -> tuple[list[Gpu], list[ServiceRequest]]:
    """GPUs of the given MB and services s0, s1, ...; keyword arguments pin (s4=2)."""
    gpus = [Gpu(i, f"GPU {i}", c) for i, c in enumerate(caps)]
    reqs = [
        ServiceRequest(Service(f"s{i}", "m", d), pinned_gpu=pins.get(f"s{i}"))
        for i, d in enumerate(demands)
    ]
    return gpus, reqs


def test_balanced_fits_where_it_used_to_overload_a_gpu() -> None:
    gpus, reqs = plain(
        [48000, 24000, 4000, 8000, 80000],
        [59000, 11500, 11500, 11000, 6000, 20500, 20500, 14500],
    )
    result = plan(StrategyName.BALANCED, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB)
    assert result.over_capacity == ()
    assert overloaded_gpus(gpus, reqs, result) == 0
    # 79500 / 80000: the fitting plan, proven the least possible maximum.
    assert highest_utilization(gpus, reqs, result) == pytest.approx(0.99375)
    assert result.optimality is not None and result.optimality.label == "optimal"


def test_balanced_keeps_searching_when_a_pin_alone_overloads_its_gpu() -> None:
    # The 6000 MB service pinned to the 4000 MB GPU 2 overloads it on its own; the others
    # still fit on GPUs 0 and 1: only the pinned GPU is over.
    gpus, reqs = plain([16000, 24000, 4000], [13500, 7000, 11000, 6000, 6000], s4=2)
    result = plan(StrategyName.BALANCED, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB)
    assert loads_of(result, reqs) == {0: 13500, 1: 24000, 2: 6000}
    assert result.over_capacity == ()
    assert result.optimality is not None and result.optimality.proven


def test_balanced_finds_the_optimum_the_local_search_missed() -> None:
    gpus, reqs = plain(
        [24000, 8000, 8000, 80000], [2000, 5000, 1500, 54000, 1500, 4000, 8500, 12500, 14000]
    )
    result = plan(StrategyName.BALANCED, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB)
    assert highest_utilization(gpus, reqs, result) == pytest.approx(0.875)


def test_balanced_flags_one_service_on_one_gpu_when_the_pair_is_25_percent_short() -> None:
    # The reference pair (28 658 MB) asked for 35 750 MB: one service (the 6.8 GB zoo
    # plus the 3.9 GB one would be two) cannot fit; it alone is flagged, one GPU is over.
    services = [21700, 650, 1500, 1200, 6800, 3900]
    gpus, reqs = plain([24564, 4094], services)
    result = plan(StrategyName.BALANCED, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB)
    reference = reference_harm(gpus, reqs, brute_force_least_harm)
    assert reference.unfit == 1
    assert len(result.over_capacity) == 1
    assert overloaded_gpus(gpus, reqs, result) == 1
    assert harm_of(gpus, reqs, result).key() == reference.key()


def test_balanced_flags_few_services_at_16_gpus_and_110_percent_demand() -> None:
    # 16 GPUs of 24 GB, 256 services of 1.1 GB (and a few bigger): 110% of capacity. The
    # fewest that cannot fit is the fewest largest ones covering the 10% excess.
    rng = random.Random(9)
    caps = [24000] * 16
    demands = [rng.randint(500, 1800) for _ in range(256)]
    scale = 1.10 * sum(caps) / sum(demands)
    demands = [max(1, round(d * scale)) for d in demands]
    excess = sum(demands) - sum(caps)
    fewest_possible = 0
    covered = 0
    for d in sorted(demands, reverse=True):
        if covered >= excess:
            break
        covered += d
        fewest_possible += 1
    gpus, reqs = plain(caps, demands)
    result = plan(StrategyName.BALANCED, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB)
    # At most a few more than that count (packing 16 GPUs exactly full is rarely
    # possible), and all of them on one GPU.
    assert fewest_possible <= len(result.over_capacity) <= fewest_possible + 3
    assert overloaded_gpus(gpus, reqs, result) == 1
    flagged = set(result.over_capacity)
    loads = loads_of(result, [r for r in reqs if r.service.name not in flagged])
    assert all(load <= 24000 for load in loads.values())


def test_vram_based_notes_say_the_truth_when_a_pin_overloads_a_gpu() -> None:
    # 9 GB pinned on the 8 GB GPU 1. The rule puts 6 GB on GPU 0 and 5 GB on GPU 2, and the
    # second 5 GB fits nowhere; rearranged, {5, 5} fill GPU 0 and 6 fills GPU 2. The note
    # must not claim that every GPU is within capacity: GPU 1 is not, by its pin.
    gpus, reqs = plain([10000, 8000, 6000], [9000, 6000, 5000, 5000], s0=1)
    result = plan(StrategyName.VRAM_BASED, gpus, reqs, reserve_mb=REFERENCE_RESERVE_MB)
    assert result.over_capacity == ()
    assert loads_of(result, reqs) == {0: 10000, 1: 9000, 2: 6000}
    assert result.notes == (
        "The plain rule overloaded a GPU; services were rearranged, in the rule's order of "
        "preference, so that every service the strategy placed fits; GPU 1 stays over "
        "capacity from pinned services alone.",
    )


def test_a_service_without_a_vram_figure_is_a_strategy_error() -> None:
    unknown = Service("ai-new", "m", None)  # type: ignore[arg-type]  # as a bad row would say
    for strategy in StrategyName:
        with pytest.raises(StrategyError, match="ai-new has no VRAM figure"):
            plan(
                strategy,
                REFERENCE_GPUS,
                requests(unknown, CLIP, ai_new=0, ai_clip=0),
                reserve_mb=REFERENCE_RESERVE_MB,
            )


def test_a_small_time_budget_gives_the_best_plan_with_an_honest_bound() -> None:
    # 8 GPUs x 30 services at 97%: 1 ms of search cannot prove the optimum; the plan
    # still fits, and the bound it reports lies below what it achieved.
    rng = random.Random(3)
    caps = [rng.randint(4000, 80000) for _ in range(8)]
    raw = [rng.randint(200, 20000) for _ in range(30)]
    demands = [max(1, round(d * 0.97 * sum(caps) / sum(raw))) for d in raw]
    gpus, reqs = plain(caps, demands)
    quick = plan(
        StrategyName.BALANCED, gpus, reqs, time_budget_ms=1, reserve_mb=REFERENCE_RESERVE_MB
    )
    assert quick.optimality is not None
    assert not quick.optimality.proven
    assert quick.optimality.lower_bound <= quick.optimality.max_utilization
    assert quick.optimality.label.startswith("within ") and quick.optimality.label.endswith(
        "% of optimal"
    )
    assert quick.over_capacity == ()
    # Deterministic: the budget is counted in search steps, not read off the clock.
    assert (
        plan(StrategyName.BALANCED, gpus, reqs, time_budget_ms=1, reserve_mb=REFERENCE_RESERVE_MB)
        == quick
    )


# --- services whose budget shrinks (issue 11 item 4) ------------------------------------


def least_of(request: ServiceRequest, reserve_mb: int) -> int:
    """What a service needs at the least, written from docs/strategies.md: an adjustable
    budget (a budget variable, no override) its minimum (the label, else 1000 MB, up to
    whole tenths of a GB, never above the estimate) plus the reserve kept free beside it;
    anything else its demand."""
    service = request.service
    if service.budget_env and request.budget_override_gb is None:
        least = service.vram_min_mb if service.vram_min_mb is not None else 1000
        least = min(-(-least // 100) * 100, service.vram_estimate_mb)
        if least < service.vram_estimate_mb:
            return least + reserve_mb
    return demand_mb(request)


@st.composite
def flexible_inventories(
    draw: st.DrawFn,
) -> tuple[list[Gpu], list[ServiceRequest], int]:
    """`inventories`, with some services taking a budget (some with a minimum), and a reserve."""
    gpus, reqs = draw(inventories(max_gpus=4, max_services=6))
    flexible = []
    for r in reqs:
        service = r.service
        if draw(st.booleans()):
            minimum = draw(st.none() | st.integers(1, service.vram_estimate_mb))
            service = replace(service, budget_env="VRAM_BUDGET_GB", vram_min_mb=minimum)
        flexible.append(replace(r, service=service))
    return gpus, flexible, draw(st.sampled_from([0, 512, 1024]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flexible_inventories(), st.sampled_from(AUTOMATIC))
def test_within_capacity_whenever_a_fit_exists_with_budgets_at_their_minimum(
    inventory: tuple[list[Gpu], list[ServiceRequest], int], strategy: StrategyName
) -> None:
    gpus, reqs, reserve_mb = inventory
    result = plan(strategy, gpus, reqs, reserve_mb=reserve_mb)
    assert plan(strategy, gpus, reqs, reserve_mb=reserve_mb) == result  # deterministic
    present = [g for g in gpus if g.present]
    position = {g.index: p for p, g in enumerate(present)}
    enabled = [r for r in reqs if r.enabled]
    fixed = [0] * len(present)
    for r in enabled:
        if r.pinned_gpu in position:
            fixed[position[r.pinned_gpu]] += least_of(r, reserve_mb)
    allowed = allowed_gpus(strategy, gpus, reqs)
    movable = [r for r in enabled if r.pinned_gpu is None]
    best, _ = brute_force_min_max(
        [g.vram_total_mb for g in present],
        [least_of(r, reserve_mb) for r in movable],
        fixed,
        [[position[i] for i in allowed[r.service.name]] for r in movable],
    )
    if best > 1.0:
        return
    assert result.over_capacity == ()
    loads = dict.fromkeys(position, 0)
    for r in enabled:
        if result.assignments[r.service.name] in position:
            loads[result.assignments[r.service.name]] += least_of(r, reserve_mb)
    assert all(loads[g.index] <= g.vram_total_mb for g in present)
    # And the validator agrees: every budget at or above its minimum, nothing over.
    evaluation = evaluate(
        gpus, reqs, result.assignments, reserve_mb=reserve_mb, over_capacity=result.over_capacity
    )
    bad = {WarningCode.BUDGET_BELOW_MINIMUM, WarningCode.NOT_PLACED_WITHIN_CAPACITY}
    assert not [w for w in evaluation.warnings if w.code in bad]
    for g in present:
        assert evaluation.planned_vram_mb[g.index] <= g.vram_total_mb


def test_a_minimum_above_what_is_left_moves_the_service_where_it_fits() -> None:
    # Beside the LLM 24564 - 21700 - 512 = 2352 MB are left; a zoo that needs 2.5 GB does
    # not fit there, but does on the A400 (4094 - 512 = 3582 MB).
    hungry = replace(ENRICHMENT, vram_min_mb=2500)
    reqs = requests(LLM, hungry)
    result = plan(StrategyName.BALANCED, REFERENCE_GPUS, reqs, reserve_mb=REFERENCE_RESERVE_MB)
    assert result.assignments == {"ai-llm": 0, "ai-enrichment": 1}
    assert result.over_capacity == ()
