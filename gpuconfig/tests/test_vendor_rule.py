"""The vendor rule (issue 22): a service goes only to a GPU it can run on, by its
``gpuconfig.accelerator`` label (cuda: NVIDIA, rocm: AMD, any: either), under every
strategy; a pin to the wrong vendor warns. Checked by brute force on small instances."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from devices.models import GpuDevice
from devices.services import gpu_inventory_rescan
from devices.tests.test_inventory_vendors import MIXED
from gpuconfig.domain import (
    ACCELERATORS,
    Gpu,
    Service,
    ServiceRequest,
    StrategyName,
    WarningCode,
    runs_on,
)
from gpuconfig.registry import RegistryError, parse_registry
from gpuconfig.selectors import planning_gpus
from gpuconfig.strategies import plan
from gpuconfig.validation import evaluate

AUTOMATIC = [s for s in StrategyName if s is not StrategyName.MANUAL]
SIZES = (24_000, 8_000, 16_000)
ESTIMATES = (6_000, 3_000, 9_000)
RESERVE_MB = 512


def _gpus(vendors: tuple[str, ...]) -> list[Gpu]:
    return [
        Gpu(index=i, name=f"{v} GPU {i}", vram_total_mb=SIZES[i], vendor=v)
        for i, v in enumerate(vendors)
    ]


def _requests(
    accelerators: tuple[str, ...], pins: dict[int, int] | None = None
) -> list[ServiceRequest]:
    return [
        ServiceRequest(
            Service(f"svc-{k}", "model", ESTIMATES[k], accelerator=a),  # type: ignore[arg-type]
            pinned_gpu=(pins or {}).get(k),
        )
        for k, a in enumerate(accelerators)
    ]


def _instances() -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every vendor mix of 1-3 GPUs with every accelerator mix of 1-3 services."""
    return [
        (vendors, accelerators)
        for n in (1, 2, 3)
        for vendors in itertools.product(("nvidia", "amd"), repeat=n)
        for m in (1, 2, 3)
        for accelerators in itertools.product(ACCELERATORS, repeat=m)
    ]


@pytest.mark.parametrize("strategy", AUTOMATIC, ids=str)
def test_every_strategy_places_each_service_only_on_a_gpu_it_can_run_on(
    strategy: StrategyName,
) -> None:
    checked = 0
    for vendors, accelerators in _instances():
        gpus, requests = _gpus(vendors), _requests(accelerators)

        result = plan(strategy, gpus, requests, reserve_mb=RESERVE_MB)

        for request in requests:
            name, accelerator = request.service.name, request.service.accelerator
            can_run = [g.index for g in gpus if runs_on(accelerator, g.vendor)]
            where = (vendors, accelerators, name)
            if can_run:
                assert result.assignments[name] in can_run, where
            else:
                assert name not in result.assignments, where
                assert any(name in note and "is not placed" in note for note in result.notes)
        evaluation = evaluate(gpus, requests, result.assignments, reserve_mb=RESERVE_MB)
        codes = [(w.code, w.service) for w in evaluation.warnings]
        assert not any(code is WarningCode.ACCELERATOR_MISMATCH for code, _ in codes)
        unplaceable = {
            r.service.name
            for r in requests
            if not any(runs_on(r.service.accelerator, v) for v in vendors)
        }
        assert {s for c, s in codes if c is WarningCode.NO_MATCHING_GPU} == unplaceable
        checked += 1
    assert checked == 14 * 39


def test_one_vendor_everywhere_plans_exactly_as_before() -> None:
    # No service is bound away from any GPU: the strategies' own code decides alone, so a
    # CUDA-only system on NVIDIA GPUs is planned as before AMD support (the same call).
    for strategy in AUTOMATIC:
        for accelerators in itertools.product(("cuda", "any"), repeat=3):
            gpus = _gpus(("nvidia", "nvidia", "nvidia"))
            requests = _requests(accelerators)
            cuda_only = _requests(("cuda",) * 3)
            assert plan(strategy, gpus, requests, reserve_mb=RESERVE_MB) == plan(
                strategy, gpus, cuda_only, reserve_mb=RESERVE_MB
            )


def test_pins_are_kept_and_a_pin_to_the_wrong_vendor_warns() -> None:
    rng = random.Random(22)
    instances = _instances()
    for _ in range(400):
        vendors, accelerators = rng.choice(instances)
        pins = {
            k: rng.randrange(len(vendors)) for k in range(len(accelerators)) if rng.random() < 0.5
        }
        gpus, requests = _gpus(vendors), _requests(accelerators, pins)
        strategy = rng.choice(list(StrategyName))
        if strategy is StrategyName.MANUAL:
            requests = _requests(
                accelerators, {k: pins.get(k, 0) for k in range(len(accelerators))}
            )

        result = plan(strategy, gpus, requests, reserve_mb=RESERVE_MB)
        evaluation = evaluate(gpus, requests, result.assignments, reserve_mb=RESERVE_MB)

        mismatched = {
            w.service for w in evaluation.warnings if w.code is WarningCode.ACCELERATOR_MISMATCH
        }
        expected = set()
        for request in requests:
            if request.pinned_gpu is not None:
                assert result.assignments[request.service.name] == request.pinned_gpu
                if not runs_on(request.service.accelerator, vendors[request.pinned_gpu]):
                    expected.add(request.service.name)
        assert mismatched == expected, (vendors, accelerators, pins, strategy)


def test_the_wrong_vendor_warning_is_one_sentence_naming_the_label() -> None:
    gpus = _gpus(("nvidia", "amd"))
    requests = _requests(("rocm",), {0: 0})

    evaluation = evaluate(gpus, requests, {"svc-0": 0}, reserve_mb=RESERVE_MB)

    assert [
        w.message for w in evaluation.warnings if w.code is WarningCode.ACCELERATOR_MISMATCH
    ] == [
        "svc-0 runs on ROCm (gpuconfig.accelerator: rocm) but GPU 0 is an NVIDIA GPU; "
        "pin it to an AMD GPU"
    ]


def _compose(label: str | None) -> str:
    extra = f"\n      gpuconfig.accelerator: {label}" if label is not None else ""
    return (
        "services:\n  ai-llm:\n    image: x\n    labels:\n"
        f"      gpuconfig.vram_estimate_mb: '8000'{extra}\n"
    )


@pytest.mark.parametrize(
    ("label", "accelerator"),
    [(None, "cuda"), ("cuda", "cuda"), ("rocm", "rocm"), ("any", "any"), ("ROCm", "rocm")],
)
def test_the_accelerator_label_defaults_to_cuda(label: str | None, accelerator: str) -> None:
    registry = parse_registry(Path("docker-compose.yml"), _compose(label))

    assert registry.services[0].accelerator == accelerator


def test_an_unknown_accelerator_is_refused_with_the_choices() -> None:
    with pytest.raises(RegistryError) as refused:
        parse_registry(Path("docker-compose.yml"), _compose("opencl"))

    assert str(refused.value) == (
        "docker-compose.yml: service 'ai-llm', label gpuconfig.accelerator: 'opencl' is not one "
        "of cuda, rocm, any (cuda: NVIDIA GPUs, rocm: AMD GPUs, any: either)"
    )


@pytest.mark.django_db
def test_an_integrated_gpu_is_planned_only_once_the_operator_includes_it(
    settings, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps({"gpus": MIXED}))
    settings.GPUCONFIG_SIMULATED_GPUS = path
    gpu_inventory_rescan()
    assert [g.index for g in planning_gpus()] == [0, 1]

    GpuDevice.objects.filter(gpu_index=2).update(planned=True)
    gpu_inventory_rescan()  # a later re-scan keeps the operator's choice

    assert GpuDevice.objects.get(gpu_index=2).planned
    assert [(g.index, g.vendor, g.device_index) for g in planning_gpus()] == [
        (0, "nvidia", None),
        (1, "amd", 0),
        (2, "amd", 1),
    ]
