"""The rules the Settings page used to decide itself: is the form unsaved, is a rollback
offered, is a run active, and "save if unsaved, then apply" as one service."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from gpuconfig import selectors as config_selectors
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import AssignmentChange, ConfigConflict, gpu_config_draft, gpu_config_save
from orchestration import selectors
from orchestration.models import ApplyRun, RunStatus
from orchestration.services import ApplyRefused, gpu_config_save_and_apply

pytestmark = pytest.mark.django_db


def test_a_draft_is_unsaved_until_saved_and_again_after_any_change():
    draft = gpu_config_draft(strategy=StrategyName.VRAM_BASED)
    assert config_selectors.draft_unsaved(draft, None), "nothing saved yet"
    saved = gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED).version
    same = gpu_config_draft(strategy=StrategyName.VRAM_BASED)
    assert not config_selectors.draft_unsaved(same, saved)
    other = gpu_config_draft(strategy=StrategyName.BALANCED)
    assert config_selectors.draft_unsaved(other, saved), "another strategy"
    off = gpu_config_draft(
        strategy=StrategyName.VRAM_BASED,
        changes=[AssignmentChange(service="ai-clip", gpu_index=None, enabled=False)],
    )
    assert config_selectors.draft_unsaved(off, saved), "a service switched off"


def _run(status: RunStatus, *, active: bool = False) -> dict[str, Any]:
    return {"status": status, "active": active}


def _applied(strategy: StrategyName, minutes_ago: int) -> ConfigVersion:
    version = gpu_config_save(user=None, strategy=strategy).version
    version.applied_at = timezone.now() - timedelta(minutes=minutes_ago)
    version.save(update_fields=["applied_at"])
    return version


def test_a_rollback_is_offered_only_after_an_ended_run_with_an_earlier_applied_version():
    assert selectors.rollback_offer(None) is None, "no run yet"
    first = _applied(StrategyName.VRAM_BASED, 10)
    assert selectors.rollback_offer(_run(RunStatus.SUCCEEDED)) is None, "one applied version"
    _applied(StrategyName.BALANCED, 5)
    assert selectors.rollback_offer(_run(RunStatus.SUCCEEDED)) == first.number
    assert selectors.rollback_offer(_run(RunStatus.RUNNING, active=True)) is None, "running"
    assert selectors.rollback_offer(_run(RunStatus.ROLLED_BACK)) is None, "rolled back already"


def test_a_run_is_active_while_one_is_running():
    assert not selectors.run_is_active()
    version = gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED).version
    ApplyRun.objects.create(version=version, status=RunStatus.RUNNING, heartbeat_at=timezone.now())
    assert selectors.run_is_active()


def test_save_and_apply_saves_what_differs_then_starts_the_run(
    startable, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        result = gpu_config_save_and_apply(user=None, strategy=StrategyName.VRAM_BASED)
    assert result.saved is not None and result.saved.number == 1
    assert result.run.version == result.saved
    assert startable == [result.run.pk]


@pytest.mark.usefixtures("startable")
def test_save_and_apply_does_not_save_again_what_is_saved_already():
    gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED)
    result = gpu_config_save_and_apply(user=None, strategy=StrategyName.VRAM_BASED)
    assert result.saved is None
    assert ConfigVersion.objects.count() == 1


@pytest.mark.usefixtures("startable")
def test_a_refused_apply_after_a_save_says_which_version_was_kept():
    version = gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED).version
    ApplyRun.objects.create(version=version, status=RunStatus.RUNNING, heartbeat_at=timezone.now())
    with pytest.raises(ApplyRefused) as refused:
        gpu_config_save_and_apply(user=None, strategy=StrategyName.BALANCED)
    assert refused.value.status_code == 409
    assert refused.value.saved is not None and refused.value.saved.number == 2


@pytest.mark.usefixtures("startable")
def test_a_refused_save_applies_nothing():
    gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED)
    with pytest.raises(ConfigConflict):
        gpu_config_save_and_apply(user=None, strategy=StrategyName.BALANCED, expected_version=7)
    assert ApplyRun.objects.count() == 0 and ConfigVersion.objects.count() == 1


def test_the_failed_version_is_the_newest_one_whose_apply_rolled_back():
    assert selectors.failed_current_version() is None, "nothing saved"
    running = _applied(StrategyName.VRAM_BASED, minutes_ago=10)
    assert selectors.failed_current_version() is None, "the newest is the one running"
    failed = gpu_config_save(user=None, strategy=StrategyName.BALANCED).version
    assert selectors.failed_current_version() is None, "saved, never applied"
    run = ApplyRun.objects.create(version=failed, previous_version=running, status="running")
    assert selectors.failed_current_version() is None, "still running"
    run.status = RunStatus.ROLLED_BACK
    run.save(update_fields=["status"])
    found = selectors.failed_current_version()
    assert found is not None
    assert (found.failed.number, found.running.number) == (failed.number, running.number)
    gpu_config_save(user=None, strategy=StrategyName.ISOLATION_FIRST)
    assert selectors.failed_current_version() is None, "edited and saved again"
