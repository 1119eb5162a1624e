"""The planner and the rule strategies (manual, vram_based, latency_optimized,
isolation_first): reference hardware by hand, random inventories by hypothesis, and the
rules every automatic strategy shares (pins, absent GPUs, input checks, budgets at their
minimum). Balanced has its own module, test_strategies_balanced.py.

Pure tests: no database, no Django models; the planner is plain dataclasses in and out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.reference import brute_force_min_max
from gpuconfig.domain import (
    RECOMMENDED_STRATEGY,
    STRATEGY_DESCRIPTIONS,
    STRATEGY_LABELS,
    Gpu,
    Service,
    ServiceRequest,
    StrategyName,
    WarningCode,
    demand_mb,
)
from gpuconfig.strategies import StrategyError, fastest_gpu, largest_gpu, plan
from gpuconfig.tests.strategy_cases import (
    A400,
    A5500,
    AUTOMATIC,
    CLIP,
    ENRICHMENT,
    FLORENCE,
    LLM,
    REFERENCE_GPUS,
    REFERENCE_RESERVE_MB,
    REFERENCE_SERVICES,
    YOLO,
    allowed_gpus,
    check_plan_shape,
    highest_utilization,
    inventories,
    loads_of,
    plain,
    requests,
)
from gpuconfig.validation import evaluate

pytestmark: list[pytest.MarkDecorator] = []


# --- names and descriptions ----------------------------------------------------------


def test_labels_descriptions_and_recommendation_cover_every_strategy() -> None:
    assert set(STRATEGY_LABELS) == set(StrategyName) == set(STRATEGY_DESCRIPTIONS)
    assert STRATEGY_LABELS[StrategyName.VRAM_BASED] == "VRAM-based"
    assert STRATEGY_DESCRIPTIONS[StrategyName.ISOLATION_FIRST] == "LLM gets dedicated GPU"
    assert RECOMMENDED_STRATEGY is StrategyName.VRAM_BASED


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
    # Largest first onto the GPU with the most free MiB: the LLM (21700 MiB) takes the
    # A5500 (2864 MiB left), then the enrichment zoo (6800) takes the A400, which has more
    # free MiB (4094) although it cannot hold it. Florence (1500) and CLIP (1200) then see
    # more room on the A5500 than on the overfull A400, and so does YOLO (650), which no
    # longer fits there: 21700 + 1500 + 1200 + 650 = 25050 MiB > 24564. At full estimates
    # (31850 MiB against 28658) nothing fits; but the zoo works with 2.0 GiB (2048 MiB), so
    # the rule's order is searched again with the zoo at that minimum (plus the 512 MiB
    # reserve kept beside a budget): YOLO, the first that no longer fits the A5500, goes to
    # the A400, where the zoo keeps 4094 - 650 - 512 = 2932 MiB (a 2.8 GiB budget).
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
    # LLM -> A5500 (2864 MiB free). Florence -> A400 (4094 > 2864 free). CLIP: 2864 free on
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
    # critical YOLO go there (22350 MiB). The rest prefers the A400: the zoo (6800 MiB) fits
    # neither card, so it goes to its preferred one, the A400. Florence (1500) no longer
    # fits the A400 but fits the A5500's 2214 MiB left: the fallback. CLIP (1200) then fits
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
    # The zoo at its 2.0 GiB minimum fits beside CLIP (1200 + 2048 + 512 reserve < 4094 MiB):
    # nothing is over capacity, and the rule's placement is kept as it is.
    assert result.over_capacity == ()
    assert result.notes == ()


def test_isolation_first_on_reference_hardware() -> None:
    # The LLM alone on the biggest card; everything else shares the A400, which cannot
    # hold the zoo even at its 2.0 GiB minimum (650 + 1500 + 1200 + 2048 + 512 reserve >
    # 4094 MiB), and the rule allows no other GPU: the zoo is what does not fit.
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


# --- rules every automatic strategy keeps ------------------------------------------------


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


# --- notes and input (issue 9) ------------------------------------------------------------


def test_vram_based_notes_say_the_truth_when_a_pin_overloads_a_gpu() -> None:
    # 9000 MiB pinned on the 8000 MiB GPU 1. The rule puts 6000 on GPU 0 and 5000 on GPU 2,
    # and the second 5000 fits nowhere; rearranged, {5000, 5000} fill GPU 0 and 6000 fills
    # GPU 2. The note must not claim that every GPU is within capacity: GPU 1 is not, by its pin.
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


# --- services whose budget shrinks (issue 11 item 4) ------------------------------------


def least_of(request: ServiceRequest, reserve_mb: int) -> int:
    """What a service needs at the least, written from docs/strategies.md: an adjustable
    budget (a budget variable, no override) its minimum (the label, else 1024 MiB, up to
    whole tenths of a GiB of 102.4 MiB, never above the estimate) plus the reserve kept free
    beside it; anything else its demand."""
    service = request.service
    if service.budget_env and request.budget_override_gb is None:
        least = service.vram_min_mb if service.vram_min_mb is not None else 1024
        tenths = math.ceil(Fraction(least) / Fraction(1024, 10))
        least = min(math.ceil(tenths * Fraction(1024, 10)), service.vram_estimate_mb)
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
    # Beside the LLM 24564 - 21700 - 512 = 2352 MiB are left; a zoo that needs 2.5 GiB (2560
    # MiB) does not fit there, but does on the A400 (4094 - 512 = 3582 MiB).
    hungry = replace(ENRICHMENT, vram_min_mb=2500)
    reqs = requests(LLM, hungry)
    result = plan(StrategyName.BALANCED, REFERENCE_GPUS, reqs, reserve_mb=REFERENCE_RESERVE_MB)
    assert result.assignments == {"ai-llm": 0, "ai-enrichment": 1}
    assert result.over_capacity == ()
