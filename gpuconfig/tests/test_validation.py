"""Warnings, budget auto-adjustment and planned VRAM (`gpuconfig.validation.evaluate`)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuconfig.domain import (
    MIB_PER_GIB,
    MIN_BUDGET_FLOOR_MB,
    Gpu,
    PlanWarning,
    Service,
    ServiceRequest,
    StrategyName,
    WarningCode,
    budget_mib,
    demand_mb,
    format_vram,
    least_budget_mb,
    tenths_mib,
    tenths_within,
)
from gpuconfig.strategies import plan
from gpuconfig.tests.strategy_cases import (
    A400,
    A5500,
    CLIP,
    ENRICHMENT,
    FLORENCE,
    LLM,
    REFERENCE_GPUS,
    REFERENCE_RESERVE_MB,
    REFERENCE_SERVICES,
    YOLO,
    requests,
)
from gpuconfig.validation import evaluate

pytestmark: list[pytest.MarkDecorator] = []


def codes(warnings: tuple[PlanWarning, ...]) -> list[WarningCode]:
    """Just the codes, in order."""
    return [w.code for w in warnings]


def only(warnings: tuple[PlanWarning, ...], code: WarningCode) -> PlanWarning:
    """The single warning with that code."""
    (found,) = [w for w in warnings if w.code is code]
    return found


# --- formatting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mib", "text"),
    [
        (4094, "4.0 GiB"),  # RTX A400: nvidia-smi says 4094MiB, the box says 4 GB
        (24564, "24.0 GiB"),  # RTX A5500: 24564MiB, 24 GB on the box
        (81559, "79.6 GiB"),  # H100 80GB HBM3
        (16384, "16.0 GiB"),
        (1024, "1.0 GiB"),
    ],
)
def test_gpu_sizes_read_in_gib_as_nvidia_smi_and_nvtop_show_them(mib: int, text: str) -> None:
    # Issue 18: the driver's MiB divided by 1000 and called GB made a 24 GB card "24.6 GB".
    assert format_vram(mib) == text


@pytest.mark.parametrize(
    ("mib", "text"),
    [
        (6963, "6.8 GiB"),
        (6800, "6.6 GiB"),
        (21700, "21.2 GiB"),
        # 3635.2 MiB is 3.55 GiB: halves round up, exactly (integer arithmetic, no float).
        (3635.2, "3.6 GiB"),
        (3635, "3.5 GiB"),
        (2560, "2.5 GiB"),
        (512, "512 MiB"),
        (650, "650 MiB"),
        (1023, "1023 MiB"),
        (0, "0 MiB"),
        (-2048, "-2.0 GiB"),
    ],
)
def test_vram_has_one_decimal_of_gib_and_small_amounts_in_mib(mib: float, text: str) -> None:
    assert format_vram(mib) == text


def test_room_is_rounded_down_like_the_budgets_cut_to_fit_it() -> None:
    # 2.29 GiB of room holds a 2.2 GiB budget, not 2.3: the sentence says 2.2 GiB too.
    assert format_vram(2355, round_down=True) == "2.2 GiB"
    assert format_vram(2356, round_down=True) == "2.3 GiB"
    assert format_vram(999.9, round_down=True) == "999 MiB"


def test_budgets_are_gib_and_tenths_stay_exact() -> None:
    # A typed 2.5 is 2.5 GiB: 2560 MiB. A tenth of a GiB is 102.4 MiB, so 2.3 GiB is
    # 2355.2 MiB, planned as 2356 (rounded up: the plan never counts less than the budget).
    assert budget_mib(2.5) == 2560 == tenths_mib(25)
    assert budget_mib(2.3) == 2356 == tenths_mib(23)
    assert budget_mib(0.1) == 103 == tenths_mib(1)
    assert tenths_within(2356) == 23
    assert tenths_within(2355) == 22
    assert all(tenths_within(tenths_mib(t)) == t for t in range(0, 20001))
    assert MIB_PER_GIB == 1024


# --- budgets ------------------------------------------------------------------------------


def test_reference_zoo_alone_on_the_a400_is_adjusted_to_3_4_gib() -> None:
    # The design's example placement (the plain VRAM-based rule, which overloads GPU 0):
    # the zoo alone on GPU 1, and 4094 - 512 = 3582 MiB hold 34 whole tenths of a GiB
    # (102.4 MiB each): 3.4 GiB, 3482 MiB. (At 1000 MB per GB it was "3.5 GB" of a "4.1 GB"
    # card, which is a 4 GB card.)
    reqs = requests(*REFERENCE_SERVICES)
    design = {"ai-llm": 0, "ai-yolo26": 0, "ai-florence": 0, "ai-clip": 0, "ai-enrichment": 1}
    evaluation = evaluate(REFERENCE_GPUS, reqs, design, reserve_mb=512)
    zoo = next(a for a in evaluation.assignments if a.service == "ai-enrichment")
    assert (zoo.gpu_index, zoo.vram_budget_gb, zoo.budget_auto_adjusted) == (1, 3.4, True)
    warning = only(evaluation.warnings, WarningCode.BUDGET_ADJUSTED)
    assert warning.message == (
        "ai-enrichment VRAM budget (6.6 GiB) exceeds GPU 1 (4.0 GiB). Auto-adjusted to 3.4 GiB."
    )
    assert (warning.service, warning.gpu_index) == ("ai-enrichment", 1)
    assert evaluation.planned_vram_mb == {0: 25050, 1: 3482}


def test_budget_left_alone_when_it_fits() -> None:
    evaluation = evaluate(
        REFERENCE_GPUS, requests(ENRICHMENT), {"ai-enrichment": 0}, reserve_mb=REFERENCE_RESERVE_MB
    )
    (zoo,) = evaluation.assignments
    assert (zoo.vram_budget_gb, zoo.budget_auto_adjusted) == (None, False)
    assert evaluation.warnings == ()
    assert evaluation.planned_vram_mb == {0: 6800, 1: 0}


def test_budget_shrinks_to_what_the_other_services_leave() -> None:
    # 24564 - 21700 - 512 = 2352 MiB left next to the LLM -> 2.2 GiB (2253 MiB; 2.3 GiB
    # would be 2356).
    evaluation = evaluate(
        REFERENCE_GPUS,
        requests(LLM, ENRICHMENT),
        {"ai-llm": 0, "ai-enrichment": 0},
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    zoo = evaluation.assignments[1]
    assert (zoo.vram_budget_gb, zoo.budget_auto_adjusted) == (2.2, True)
    assert only(evaluation.warnings, WarningCode.BUDGET_ADJUSTED).message == (
        "ai-enrichment VRAM budget (6.6 GiB) exceeds the 2.2 GiB left on GPU 0 (24.0 GiB). "
        "Auto-adjusted to 2.2 GiB."
    )
    assert evaluation.planned_vram_mb[0] == 21700 + 2253


def test_below_its_minimum_the_zoo_will_not_fit_instead_of_getting_0_2_gb() -> None:
    # Isolation-first's A400: Florence + CLIP + YOLO take 3350 MiB, 4094 - 3350 - 512 = 232
    # MiB are left. That used to become a 0.2 GB budget; the zoo declares 2000 MiB as the
    # least it works with (2.0 GiB in whole tenths, 2048 MiB), so it does not fit there,
    # and it is planned at that minimum.
    reqs = requests(FLORENCE, CLIP, YOLO, ENRICHMENT)
    evaluation = evaluate(
        REFERENCE_GPUS,
        reqs,
        dict.fromkeys((s.service.name for s in reqs), 1),
        over_capacity=("ai-enrichment",),
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    zoo = evaluation.assignments[-1]
    assert (zoo.vram_budget_gb, zoo.budget_auto_adjusted) == (2.0, True)
    warning = only(evaluation.warnings, WarningCode.BUDGET_BELOW_MINIMUM)
    assert warning.message == (
        "ai-enrichment will not fit on GPU 1 (4.0 GiB): it needs a VRAM budget of at least "
        "2.0 GiB (its minimum), but only 232 MiB is left after the other services and the "
        "512 MiB reserve."
    )
    assert (warning.service, warning.gpu_index) == ("ai-enrichment", 1)
    assert WarningCode.BUDGET_ADJUSTED not in codes(evaluation.warnings)
    assert evaluation.planned_vram_mb[1] == 3350 + 2048
    # It counts as over capacity: the GPU is over, and the plan's listing is not excused.
    assert WarningCode.COMBINED_EXCEEDS_GPU in codes(evaluation.warnings)
    assert only(evaluation.warnings, WarningCode.NOT_PLACED_WITHIN_CAPACITY).service == (
        "ai-enrichment"
    )


def test_a_minimum_above_what_is_left_says_it_will_not_fit() -> None:
    # 24564 - 21700 - 512 = 2352 MiB beside the LLM: enough for 2.0 GiB, not for the 2.5
    # GiB (2560 MiB) that a 2500 MiB minimum rounds up to.
    hungry = Service("ai-zoo", "zoo", 6800, budget_env="VRAM_BUDGET_GB", vram_min_mb=2500)
    evaluation = evaluate(
        REFERENCE_GPUS,
        requests(LLM, hungry),
        {"ai-llm": 0, "ai-zoo": 0},
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    zoo = evaluation.assignments[1]
    assert (zoo.vram_budget_gb, zoo.budget_auto_adjusted) == (2.5, True)
    warning = only(evaluation.warnings, WarningCode.BUDGET_BELOW_MINIMUM)
    assert warning.message.startswith("ai-zoo will not fit on GPU 0 (24.0 GiB)")
    assert "at least 2.5 GiB (its minimum), but only 2.2 GiB is left" in warning.message
    assert evaluation.planned_vram_mb[0] == 21700 + 2560


def test_without_a_minimum_the_floor_is_1_gib() -> None:
    # The same room with no label: 2352 MiB -> 2.2 GiB, above the 1 GiB floor. On the A400
    # beside the three small models (232 MiB left), the floor says it will not fit.
    plain = Service("ai-zoo", "zoo", 6800, budget_env="VRAM_BUDGET_GB")
    assert least_budget_mb(plain) == MIN_BUDGET_FLOOR_MB == 1024
    evaluation = evaluate(
        REFERENCE_GPUS,
        requests(LLM, plain),
        {"ai-llm": 0, "ai-zoo": 0},
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    assert evaluation.assignments[1].vram_budget_gb == 2.2
    reqs = requests(FLORENCE, CLIP, YOLO, plain)
    evaluation = evaluate(
        REFERENCE_GPUS,
        reqs,
        dict.fromkeys((s.service.name for s in reqs), 1),
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    assert evaluation.assignments[-1].vram_budget_gb == 1.0
    warning = only(evaluation.warnings, WarningCode.BUDGET_BELOW_MINIMUM)
    assert "at least 1.0 GiB (the least budget GPU Config gives a service)" in warning.message


def test_minimums_are_kept_when_two_adjustable_services_share_a_gpu() -> None:
    # Room 3582 MiB. In proportion to the estimates (6800 : 3400) the second would get
    # 1.1 GiB, below its 1.4 GiB minimum: each gets its minimum (2.0 + 1.4 GiB, 2048 + 1434
    # MiB) and the 100 MiB left go in proportion to what each wants beyond it (whole tenths
    # only: none).
    other = Service("ai-other", "other", 3400, budget_env="VRAM_BUDGET_GB", vram_min_mb=1400)
    evaluation = evaluate(
        REFERENCE_GPUS,
        requests(ENRICHMENT, other),
        {"ai-enrichment": 1, "ai-other": 1},
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    assert [a.vram_budget_gb for a in evaluation.assignments] == [2.0, 1.4]
    assert codes(evaluation.warnings) == [WarningCode.BUDGET_ADJUSTED] * 2
    assert evaluation.planned_vram_mb[1] == 2048 + 1434
    # With a third that needs 1 GiB more than is left, that one does not fit; the others do.
    third = Service("ai-third", "third", 3000, budget_env="VRAM_BUDGET_GB", vram_min_mb=2500)
    reqs = requests(ENRICHMENT, other, third)
    evaluation = evaluate(
        REFERENCE_GPUS,
        reqs,
        dict.fromkeys((s.service.name for s in reqs), 1),
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    assert [a.vram_budget_gb for a in evaluation.assignments] == [2.0, 1.4, 2.5]
    assert only(evaluation.warnings, WarningCode.BUDGET_BELOW_MINIMUM).service == "ai-third"


def test_two_adjustable_services_split_the_room_in_proportion() -> None:
    other = Service("ai-other", "other", 3400, budget_env="VRAM_BUDGET_GB")
    evaluation = evaluate(
        REFERENCE_GPUS,
        requests(ENRICHMENT, other),
        {"ai-enrichment": 1, "ai-other": 1},
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    # Room 3582 MiB split 2:1 -> 2388 and 1194 MiB -> 2.3 and 1.1 GiB in whole tenths of
    # 102.4 MiB: 2356 + 1127 MiB.
    budgets = [a.vram_budget_gb for a in evaluation.assignments]
    assert budgets == [2.3, 1.1]
    assert evaluation.planned_vram_mb[1] == 2356 + 1127 <= 4094 - 512


def test_override_wins_over_auto_adjustment() -> None:
    reqs = [ServiceRequest(ENRICHMENT, budget_override_gb=3.0)]
    evaluation = evaluate(
        REFERENCE_GPUS, reqs, {"ai-enrichment": 1}, reserve_mb=REFERENCE_RESERVE_MB
    )
    (zoo,) = evaluation.assignments
    assert (zoo.vram_budget_gb, zoo.budget_auto_adjusted) == (3.0, False)
    assert evaluation.warnings == ()
    assert evaluation.planned_vram_mb[1] == 3072  # 3.0 GiB


def test_override_too_large_is_kept_and_warned_about() -> None:
    reqs = [ServiceRequest(ENRICHMENT, budget_override_gb=5.0)]
    evaluation = evaluate(
        REFERENCE_GPUS, reqs, {"ai-enrichment": 1}, reserve_mb=REFERENCE_RESERVE_MB
    )
    (zoo,) = evaluation.assignments
    assert (zoo.vram_budget_gb, zoo.budget_auto_adjusted) == (5.0, False)
    warning = only(evaluation.warnings, WarningCode.BUDGET_OVERRIDE_TOO_LARGE)
    assert warning.message == (
        "ai-enrichment VRAM budget override (5.0 GiB) exceeds the 3.4 GiB left on GPU 1 (4.0 GiB)"
    )
    assert (warning.service, warning.gpu_index) == ("ai-enrichment", 1)
    assert codes(evaluation.warnings) == [WarningCode.BUDGET_OVERRIDE_TOO_LARGE]


def test_demand_uses_the_override_when_set() -> None:
    assert demand_mb(ServiceRequest(ENRICHMENT)) == 6800
    # A budget is GiB: a typed 3.5 plans as 3584 MiB, 2.5 as 2560.
    assert demand_mb(ServiceRequest(ENRICHMENT, budget_override_gb=3.5)) == 3584
    assert demand_mb(ServiceRequest(ENRICHMENT, budget_override_gb=2.5)) == 2560


# --- each warning -------------------------------------------------------------------------


def test_llm_on_small_gpu() -> None:
    evaluation = evaluate(
        REFERENCE_GPUS, requests(LLM), {"ai-llm": 1}, reserve_mb=REFERENCE_RESERVE_MB
    )
    warning = only(evaluation.warnings, WarningCode.LLM_ON_SMALL_GPU)
    assert (
        warning.message == "Nemotron-3-Nano-30B (Q4_K_M) requires ~21.2 GiB, GPU 1 only has 4.0 GiB"
    )
    assert (warning.service, warning.gpu_index) == ("ai-llm", 1)


def test_service_exceeds_gpu() -> None:
    big = Service("ai-big", "Big", 5000)
    evaluation = evaluate(
        REFERENCE_GPUS, requests(big), {"ai-big": 1}, reserve_mb=REFERENCE_RESERVE_MB
    )
    warning = only(evaluation.warnings, WarningCode.SERVICE_EXCEEDS_GPU)
    assert warning.message == "ai-big needs ~4.9 GiB, exceeds GPU 1 (4.0 GiB)"
    assert (warning.service, warning.gpu_index) == ("ai-big", 1)


def test_combined_exceeds_gpu() -> None:
    extra = Service("ai-extra", "Extra", 1300)
    evaluation = evaluate(
        REFERENCE_GPUS,
        requests(LLM, extra),
        {"ai-llm": 1, "ai-extra": 1},
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    warning = only(evaluation.warnings, WarningCode.COMBINED_EXCEEDS_GPU)
    assert warning.message == "Combined VRAM (~22.5 GiB) exceeds GPU 1 capacity (4.0 GiB)"
    assert (warning.service, warning.gpu_index) == (None, 1)
    assert codes(evaluation.warnings) == [
        WarningCode.LLM_ON_SMALL_GPU,
        WarningCode.COMBINED_EXCEEDS_GPU,
    ]


def test_single_service_over_capacity_is_not_also_a_combined_warning() -> None:
    evaluation = evaluate(
        REFERENCE_GPUS, requests(LLM), {"ai-llm": 1}, reserve_mb=REFERENCE_RESERVE_MB
    )
    assert codes(evaluation.warnings) == [WarningCode.LLM_ON_SMALL_GPU]


@pytest.mark.parametrize(
    "gpus", [REFERENCE_GPUS, [A5500, A400, Gpu(2, "gone", 8192, present=False)]]
)
def test_gpu_missing(gpus: list[Gpu]) -> None:
    evaluation = evaluate(gpus, requests(CLIP), {"ai-clip": 2}, reserve_mb=REFERENCE_RESERVE_MB)
    warning = only(evaluation.warnings, WarningCode.GPU_MISSING)
    assert warning.message == "ai-clip is assigned to GPU 2, which is not detected"
    assert (warning.service, warning.gpu_index) == ("ai-clip", 2)
    assert evaluation.assignments[0].gpu_index == 2
    assert evaluation.planned_vram_mb == {0: 0, 1: 0}  # present GPUs only


def test_external_vram_use() -> None:
    busy = Gpu(0, "NVIDIA RTX A5500", 24564, vram_used_mb=23800, compute_capability="8.6")
    evaluation = evaluate(
        [busy, A400],
        requests(LLM),
        {"ai-llm": 0},
        applied={"ai-llm": 0},
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    warning = only(evaluation.warnings, WarningCode.EXTERNAL_VRAM_USE)
    # 23800 used - 21700 for the running LLM = 2100 MiB outside; 24564 - 2100 = 22464 free.
    assert warning.message == (
        "GPU 0 has 2.1 GiB in use by processes outside the managed services; "
        "real free VRAM is 21.9 GiB"
    )
    assert (warning.service, warning.gpu_index) == (None, 0)


def test_external_use_within_the_reserve_is_not_reported() -> None:
    busy = Gpu(0, "A5500", 24564, vram_used_mb=22200)
    evaluation = evaluate(
        [busy], requests(LLM), {"ai-llm": 0}, applied={"ai-llm": 0}, reserve_mb=REFERENCE_RESERVE_MB
    )
    assert evaluation.warnings == ()  # 500 MB outside <= 512 MB reserve


def test_without_a_record_of_what_runs_used_vram_is_not_blamed_on_others() -> None:
    # Nothing applied through GPU Config yet: the 19 GiB in use may be our own LLM.
    busy = Gpu(0, "A5500", 24564, vram_used_mb=19000)
    evaluation = evaluate(
        [busy], requests(CLIP), {"ai-clip": 0}, applied=None, reserve_mb=REFERENCE_RESERVE_MB
    )
    assert codes(evaluation.warnings) == []


def test_with_nothing_managed_running_all_used_vram_is_external() -> None:
    busy = Gpu(0, "A5500", 24564, vram_used_mb=1000)
    evaluation = evaluate(
        [busy], requests(CLIP), {"ai-clip": 0}, applied={}, reserve_mb=REFERENCE_RESERVE_MB
    )
    assert codes(evaluation.warnings) == [WarningCode.EXTERNAL_VRAM_USE]


def test_no_gpus() -> None:
    evaluation = evaluate([], requests(CLIP), {"ai-clip": 0}, reserve_mb=REFERENCE_RESERVE_MB)
    assert codes(evaluation.warnings) == [WarningCode.NO_GPUS, WarningCode.GPU_MISSING]
    assert evaluation.warnings[0].service is None
    assert evaluation.warnings[0].gpu_index is None
    assert evaluation.planned_vram_mb == {}


def test_single_gpu_isolation() -> None:
    reqs = requests(LLM, CLIP)
    result = plan(StrategyName.ISOLATION_FIRST, [A5500], reqs, reserve_mb=REFERENCE_RESERVE_MB)
    evaluation = evaluate(
        [A5500],
        reqs,
        result.assignments,
        strategy=StrategyName.ISOLATION_FIRST,
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    warning = only(evaluation.warnings, WarningCode.SINGLE_GPU_ISOLATION)
    assert (warning.service, warning.gpu_index) == (None, 0)
    assert "only GPU 0" in warning.message
    # Only for isolation-first.
    other = evaluate(
        [A5500],
        reqs,
        result.assignments,
        strategy=StrategyName.BALANCED,
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    assert other.warnings == ()


def test_not_placed_within_capacity_except_when_a_budget_makes_it_fit() -> None:
    # The design's placement (the plain VRAM-based rule), with both services it overloads
    # listed as a plan of that shape would list them (the planner now repairs it).
    reqs = requests(*REFERENCE_SERVICES)
    design = {"ai-llm": 0, "ai-yolo26": 0, "ai-florence": 0, "ai-clip": 0, "ai-enrichment": 1}
    evaluation = evaluate(
        REFERENCE_GPUS,
        reqs,
        design,
        over_capacity=("ai-yolo26", "ai-enrichment"),
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    # The zoo's shrunk budget fits, so only YOLO is reported as not placed within capacity.
    warning = only(evaluation.warnings, WarningCode.NOT_PLACED_WITHIN_CAPACITY)
    assert (warning.service, warning.gpu_index) == ("ai-yolo26", 0)
    assert warning.message == (
        "ai-yolo26 could not be placed within any GPU's capacity; it is assigned to GPU 0 anyway"
    )
    assert codes(evaluation.warnings) == [
        WarningCode.NOT_PLACED_WITHIN_CAPACITY,
        WarningCode.BUDGET_ADJUSTED,
        WarningCode.COMBINED_EXCEEDS_GPU,
    ]
    assert only(evaluation.warnings, WarningCode.COMBINED_EXCEEDS_GPU).message == (
        "Combined VRAM (~24.5 GiB) exceeds GPU 0 capacity (24.0 GiB)"
    )


def test_disabled_and_unassigned_services_are_ignored() -> None:
    reqs = [ServiceRequest(LLM, enabled=False), ServiceRequest(CLIP), ServiceRequest(YOLO)]
    evaluation = evaluate(
        REFERENCE_GPUS,
        reqs,
        {"ai-llm": 1, "ai-clip": 1, "ghost": 3},
        reserve_mb=REFERENCE_RESERVE_MB,
    )
    assert [a.service for a in evaluation.assignments] == ["ai-clip"]
    assert evaluation.warnings == ()


def test_warning_as_dict() -> None:
    warning = PlanWarning(WarningCode.GPU_MISSING, "gone", "ai-clip", 2)
    assert warning.as_dict() == {
        "code": "gpu_missing",
        "message": "gone",
        "service": "ai-clip",
        "gpu_index": 2,
    }


# --- random inputs --------------------------------------------------------------------------


@st.composite
def setups(draw: st.DrawFn) -> tuple[list[Gpu], list[ServiceRequest], dict[str, int]]:
    """Random GPUs, services (some budget-driven, some overridden) and assignments."""
    gpu_count = draw(st.integers(0, 4))
    gpus = [
        Gpu(
            i,
            f"GPU {i}",
            draw(st.integers(4000, 80000)),
            vram_used_mb=draw(st.none() | st.integers(0, 80000)),
            present=draw(st.booleans()),
        )
        for i in range(gpu_count)
    ]
    reqs: list[ServiceRequest] = []
    assignments: dict[str, int] = {}
    for i in range(draw(st.integers(0, 8))):
        service = Service(
            f"svc-{i}",
            f"model {i}",
            draw(st.integers(200, 40000)),
            draw(st.sampled_from(["llm", "critical", "standard"])),
            draw(st.sampled_from([None, "VRAM_BUDGET_GB"])),
        )
        if service.budget_env and draw(st.booleans()):
            service = replace(service, vram_min_mb=draw(st.integers(1, service.vram_estimate_mb)))
        override = draw(st.none() | st.floats(0.1, 40.0).map(lambda x: round(x, 1)))
        reqs.append(
            ServiceRequest(service, enabled=draw(st.booleans()), budget_override_gb=override)
        )
        assignments[service.name] = draw(st.integers(0, gpu_count))
    return gpus, reqs, assignments


@settings(max_examples=300, deadline=None)
@given(setups(), st.integers(0, 2048))
def test_evaluation_invariants(
    setup: tuple[list[Gpu], list[ServiceRequest], dict[str, int]], reserve_mb: int
) -> None:
    gpus, reqs, assignments = setup
    evaluation = evaluate(gpus, reqs, assignments, reserve_mb=reserve_mb)
    present = {g.index: g for g in gpus if g.present}
    enabled = {r.service.name: r for r in reqs if r.enabled}

    assert [a.service for a in evaluation.assignments] == list(enabled)
    assert set(evaluation.planned_vram_mb) == set(present)
    planned = dict.fromkeys(present, 0)
    for resolved in evaluation.assignments:
        request = enabled[resolved.service]
        assert resolved.gpu_index == assignments[resolved.service]
        if request.budget_override_gb is not None:  # an override always wins
            assert resolved.vram_budget_gb == request.budget_override_gb
            assert not resolved.budget_auto_adjusted
        elif not request.service.budget_env:
            assert resolved.vram_budget_gb is None
        if resolved.budget_auto_adjusted:
            # Never below the service's least budget (its minimum or the 1 GiB floor).
            assert resolved.vram_budget_gb is not None
            assert budget_mib(resolved.vram_budget_gb) >= least_budget_mb(request.service)
            assert budget_mib(resolved.vram_budget_gb) < request.service.vram_estimate_mb
            assert math.isclose(resolved.vram_budget_gb * 10, round(resolved.vram_budget_gb * 10))
        if resolved.gpu_index in present:
            if resolved.budget_auto_adjusted and resolved.vram_budget_gb is not None:
                planned[resolved.gpu_index] += budget_mib(resolved.vram_budget_gb)
            else:
                planned[resolved.gpu_index] += demand_mb(request)
    assert evaluation.planned_vram_mb == planned

    below_minimum = {
        (w.service, w.gpu_index)
        for w in evaluation.warnings
        if w.code is WarningCode.BUDGET_BELOW_MINIMUM
    }
    for index, gpu in present.items():
        adjusted = [
            a
            for a in evaluation.assignments
            if a.gpu_index == index
            and a.budget_auto_adjusted
            and (a.service, index) not in below_minimum
        ]
        fixed = sum(
            demand_mb(enabled[a.service])
            for a in evaluation.assignments
            if a.gpu_index == index and not a.budget_auto_adjusted
        )
        # Budgets of services that fit (not below their minimum) fit next to the fixed ones.
        if (
            adjusted
            and fixed + reserve_mb <= gpu.vram_total_mb
            and not any(where == index for _, where in below_minimum)
        ):
            assert planned[index] <= gpu.vram_total_mb - reserve_mb

    for warning in evaluation.warnings:
        assert isinstance(warning.code, WarningCode)
        assert warning.message
        if warning.service is not None:
            assert warning.service in enabled
        if warning.code in (WarningCode.COMBINED_EXCEEDS_GPU, WarningCode.EXTERNAL_VRAM_USE):
            assert warning.gpu_index in present and warning.service is None
    assert (WarningCode.NO_GPUS in codes(evaluation.warnings)) == (not present)
