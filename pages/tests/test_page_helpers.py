"""The Settings pages' small rules: input bounds, what a rollback goes back to, run progress."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from gpuconfig import selectors
from gpuconfig.domain import (
    RECOMMENDED_STRATEGY,
    Gpu,
    Plan,
    Service,
    ServiceRequest,
    StrategyName,
)
from gpuconfig.registry import load_registry
from gpuconfig.services import gpu_config_restore, gpu_config_save
from gpuconfig.strategies import plan
from gpuconfig.system_settings import SPECS, SettingError, validate_setting
from orchestration.models import StepStatus
from orchestration.selectors import step_progress as _step_progress
from pages.forms import SystemSettingsForm

BOUNDED = sorted(key for key, spec in SPECS.items() if spec.bounds is not None)


@pytest.mark.parametrize("key", BOUNDED)
def test_the_inputs_bounds_are_the_ones_the_server_enforces(key):
    bounds = SPECS[key].bounds
    assert bounds is not None
    low, high = bounds
    assert validate_setting(key, low) == low
    assert validate_setting(key, high) == high
    for outside in (low - 1, high + 1):
        with pytest.raises(SettingError):
            validate_setting(key, outside)


def test_the_system_form_renders_the_bounds_and_drops_the_default_strategy_after_a_save():
    html = str(SystemSettingsForm())
    assert 'name="status_poll_seconds" min="1" max="60"' in html
    assert 'name="default_strategy"' in html
    assert "default_strategy" not in SystemSettingsForm(strategy_saved=True).fields


def _applied(strategy: StrategyName, minutes_ago: int):
    version = gpu_config_save(user=None, strategy=strategy).version
    version.applied_at = timezone.now() - timedelta(minutes=minutes_ago)
    version.save(update_fields=["applied_at"])
    return version


@pytest.mark.django_db
def test_a_rollback_goes_back_to_the_version_applied_before_the_latest_applied():
    assert selectors.rollback_target() is None
    first = _applied(StrategyName.VRAM_BASED, 10)
    assert selectors.rollback_target() is None, "one applied version: nothing to go back to"
    gpu_config_save(user=None, strategy=StrategyName.BALANCED)  # saved, never applied
    assert selectors.rollback_target() is None
    _applied(StrategyName.ISOLATION_FIRST, 5)
    assert selectors.rollback_target() == first


@pytest.mark.django_db
def test_a_restored_copy_names_the_version_it_copies():
    first = gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED).version
    gpu_config_save(user=None, strategy=StrategyName.BALANCED)
    copy = gpu_config_restore(version=first, user=None)
    assert selectors.restored_from(copy.number) == first.number
    assert selectors.restored_from(first.number) is None
    assert selectors.restored_from(99) is None


def _steps(*states: StepStatus) -> list[dict[str, str]]:
    return [{"status": state} for state in states]


def test_progress_while_one_command_recreates_every_service_then_each_is_checked():
    recreating = _step_progress(_steps(StepStatus.RECREATING, StepStatus.PENDING), active=True)
    assert recreating["steps_recreating"] and recreating["steps_done"] == 0
    assert 0 < recreating["steps_percent"] < 50
    checking = _step_progress(_steps(StepStatus.HEALTHY, StepStatus.VERIFYING), active=True)
    assert not checking["steps_recreating"]
    assert (checking["steps_done"], checking["steps_total"]) == (1, 2)
    assert checking["steps_percent"] == 75
    assert _step_progress([], active=False)["steps_percent"] == 100


# --- the Recommended mark ------------------------------------------------------------------

A5500 = Gpu(0, "NVIDIA RTX A5500", 24564, compute_capability="8.6")
A400 = Gpu(1, "NVIDIA RTX A400", 4094, compute_capability="8.6")
AUTOMATIC = [s for s in StrategyName if s is not StrategyName.MANUAL]


# The System setting vram_reserve_mb's default, the reserve in force on a fresh install.
RESERVE_MB = 512


def _reference_requests() -> list[ServiceRequest]:
    registry = load_registry(Path(__file__).resolve().parents[2] / "docker-compose.prod.yml")
    return [ServiceRequest(service) for service in registry.services]


def test_the_recommended_strategy_fits_at_least_as_well_as_any_other_on_the_reference_gpus():
    requests = _reference_requests()
    over = {
        s: len(plan(s, (A5500, A400), requests, reserve_mb=RESERVE_MB).over_capacity)
        for s in AUTOMATIC
    }
    chosen = selectors.recommended_strategy((A5500, A400), requests, reserve_mb=RESERVE_MB)
    assert chosen is not StrategyName.MANUAL
    assert over[chosen] == min(over.values()), over


def _plans(monkeypatch, over: dict[StrategyName, tuple[str, ...]], where: dict[str, int]):
    def fake_plan(strategy, gpus, requests, **kwargs):
        return Plan(assignments=dict(where), over_capacity=over[StrategyName(strategy)])

    monkeypatch.setattr(selectors, "plan", fake_plan)
    selectors._recommended.cache_clear()  # answers are kept per hardware and service list


def test_the_mark_goes_to_the_plan_with_fewest_services_over_capacity(monkeypatch):
    requests = [ServiceRequest(Service("a", "m", 1000)), ServiceRequest(Service("b", "m", 1000))]
    over = {s: ("a",) for s in AUTOMATIC} | {StrategyName.BALANCED: ()}
    _plans(monkeypatch, over, {"a": 0, "b": 0})
    assert (
        selectors.recommended_strategy((A5500,), requests, reserve_mb=RESERVE_MB)
        is StrategyName.BALANCED
    )


def test_between_plans_that_fit_equally_the_designs_recommendation_wins(monkeypatch):
    requests = [ServiceRequest(Service("a", "m", 1000))]
    _plans(monkeypatch, {s: () for s in AUTOMATIC}, {"a": 0})
    assert (
        selectors.recommended_strategy((A5500,), requests, reserve_mb=RESERVE_MB)
        is RECOMMENDED_STRATEGY
    )


def test_the_answer_is_kept_while_only_live_readings_change():
    requests = _reference_requests()
    first = selectors.recommended_strategy((A5500, A400), requests, reserve_mb=RESERVE_MB)
    busy = replace(A5500, vram_used_mb=23000)
    assert selectors.recommended_strategy((busy, A400), requests, reserve_mb=RESERVE_MB) is first
    assert selectors._recommended.cache_info().hits >= 1


def test_without_gpus_the_designs_recommendation_stays():
    assert (
        selectors.recommended_strategy((), _reference_requests(), reserve_mb=RESERVE_MB)
        is RECOMMENDED_STRATEGY
    )
