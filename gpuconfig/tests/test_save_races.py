"""Concurrent saves (issue 12), on real PostgreSQL connections from real threads.

Saves that name no version have nothing to conflict with: they take turns and all succeed.
Saves that name the same version: one wins, the others get a 409. Rollbacks pressed at once:
orchestration/tests/test_rollback_races.py.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from ruamel.yaml import YAML

from devices.services import gpu_inventory_rescan
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import gpu_config_save
from gpuconfig.tests.concurrency import all_at_once, token_clients

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/system/gpu-config"


@pytest.fixture(autouse=True)
def _setup(db: Any, settings: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite takes one writer at a time by itself")
    settings.GPUCONFIG_API_RATE_USER = ""
    gpu_inventory_rescan()


def test_concurrent_saves_without_a_version_take_turns_and_all_succeed(staff_user):
    client = token_clients(staff_user)
    strategies = [s.value for s in StrategyName if s != StrategyName.MANUAL]

    numbers = itertools.count()

    def save() -> Any:
        body = {"strategy": strategies[next(numbers) % len(strategies)]}
        return client().put(URL, data=json.dumps(body), content_type="application/json")

    responses = all_at_once(20, save)

    assert Counter(r.status_code for r in responses) == {200: 20}, [
        r.json() for r in responses if r.status_code != 200
    ]
    # Each save that changed something added the next version; one that found its strategy
    # already saved by the one before it added none and said so (issue 16).
    bodies = [r.json() for r in responses]
    created = sorted(b["version"] for b in bodies if not b["unchanged"])
    assert created == list(range(1, len(created) + 1))
    assert {b["version"] for b in bodies if b["unchanged"]} <= set(created)
    assert len(created) >= 2
    latest = ConfigVersion.objects.order_by("-number").first()
    assert latest is not None and latest.number == len(created)
    document = YAML(typ="safe").load(
        (Path(django_settings.GPUCONFIG_OUTPUT_DIR) / "gpu-assignments.yml").read_text()
    )
    assert (document["version"], document["strategy"]) == (latest.number, latest.strategy)


def test_concurrent_saves_naming_the_same_version_give_one_200_and_409s(staff_user):
    client = token_clients(staff_user)
    gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED)
    body = json.dumps({"strategy": "balanced", "version": 1})

    responses = all_at_once(
        10, lambda: client().put(URL, data=body, content_type="application/json")
    )

    assert Counter(r.status_code for r in responses) == {200: 1, 409: 9}
    assert ConfigVersion.objects.count() == 2
