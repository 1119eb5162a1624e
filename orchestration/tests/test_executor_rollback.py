"""An apply's rollback after a failure (issue 12): a run that was marked interrupted in the
meantime (it looked dead, and a new Apply wrote its own override) rolls nothing back."""

from __future__ import annotations

from typing import Any

import pytest

from devices.services import gpu_inventory_rescan
from gpuconfig.domain import StrategyName
from gpuconfig.services import gpu_config_save
from orchestration import executor
from orchestration.models import ApplyRun, RunKind, RunStatus

pytestmark = pytest.mark.django_db


def test_a_failed_run_already_marked_interrupted_does_not_roll_back(db: Any) -> None:
    gpu_inventory_rescan()
    version = gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED).version
    run = ApplyRun.objects.create(kind=RunKind.APPLY, version=version, status=RunStatus.RUNNING)
    override = executor.override_path()
    override.parent.mkdir(parents=True, exist_ok=True)
    override.write_text("# the override this run replaced\n")
    said: list[str] = []
    context = executor._context(run.pk, said.append)
    # Meanwhile the run looked dead and was marked interrupted, and a new Apply wrote its own.
    ApplyRun.objects.filter(pk=run.pk).update(status=RunStatus.INTERRUPTED)
    override.write_text("# the next apply's override\n")

    outcome = executor.roll_back(context, "podman-compose exited 1")

    assert outcome == RunStatus.INTERRUPTED
    assert override.read_text() == "# the next apply's override\n", "the loser touched it"
    run.refresh_from_db()
    assert run.status == RunStatus.INTERRUPTED
    assert run.error == ""
    assert said == [
        "failed: podman-compose exited 1; the run is interrupted now, so nothing is rolled back"
    ]
