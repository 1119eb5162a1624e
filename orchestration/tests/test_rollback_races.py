"""Rollbacks pressed ten times at once (issue 12), on real PostgreSQL connections from real
threads: one run starts, the other nine are refused cleanly and write nothing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from ruamel.yaml import YAML

from devices.services import gpu_inventory_rescan
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import gpu_config_save
from gpuconfig.tests.concurrency import all_at_once, token_clients
from orchestration.models import ApplyRun

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _setup(db: Any, settings: Any, startable: list[Any]) -> None:
    # Rollback's podman probe and the Celery hand-over (startable) are not what this is about.
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite takes one writer at a time by itself")
    settings.GPUCONFIG_API_RATE_USER = ""
    gpu_inventory_rescan()


def test_ten_concurrent_rollbacks_start_one_run_and_refuse_nine_cleanly(staff_user):
    for strategy in (StrategyName.VRAM_BASED, StrategyName.ISOLATION_FIRST):
        version = gpu_config_save(user=None, strategy=strategy).version
        ConfigVersion.objects.filter(pk=version.pk).update(applied_at=timezone.now())
    client = token_clients(staff_user)

    responses = all_at_once(10, lambda: client().post("/api/system/gpu-config/rollback"))

    assert Counter(r.status_code for r in responses) == {202: 1, 409: 9}, [
        (r.status_code, r.content[:200]) for r in responses
    ]
    refused = {r.json()["error"] for r in responses if r.status_code == 409}
    assert refused == {"Another apply is already running; wait for it to finish."}
    # One restored version, one run: the nine refusals wrote nothing.
    assert ConfigVersion.objects.count() == 3
    assert ApplyRun.objects.count() == 1
    document = YAML(typ="safe").load(
        (Path(django_settings.GPUCONFIG_OUTPUT_DIR) / "gpu-assignments.yml").read_text()
    )
    assert document["version"] == 3
