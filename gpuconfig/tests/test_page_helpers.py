"""The Settings pages' small rules: input bounds, what a rollback goes back to, run progress."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from gpuconfig import selectors
from gpuconfig.domain import StrategyName
from gpuconfig.forms import INPUT_BOUNDS, SystemSettingsForm
from gpuconfig.services import gpu_config_restore, gpu_config_save
from gpuconfig.system_settings import SettingError, validate_setting
from gpuconfig.views import _step_progress
from orchestration.models import StepStatus


@pytest.mark.parametrize("key", sorted(INPUT_BOUNDS))
def test_the_inputs_bounds_are_the_ones_the_server_enforces(key):
    low, high = INPUT_BOUNDS[key]
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
