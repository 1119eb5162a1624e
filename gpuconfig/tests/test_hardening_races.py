"""Concurrent writes (issue 12), on real PostgreSQL connections from real threads.

Saves that name no version have nothing to conflict with: they take turns and all succeed.
Rollbacks pressed ten times at once start one run and refuse the other nine cleanly.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from ruamel.yaml import YAML

from devices.services import gpu_inventory_rescan
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import gpu_config_save
from orchestration import podman
from orchestration import services as orchestration_services
from orchestration.models import ApplyRun

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/system/gpu-config"


@pytest.fixture(autouse=True)
def _setup(db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite takes one writer at a time by itself")
    settings.GPUCONFIG_API_RATE_USER = ""
    gpu_inventory_rescan()
    # Rollback's podman probe and the Celery hand-over are not what these tests are about.
    orchestration_services.forget_probe()
    monkeypatch.setattr(
        orchestration_services,
        "compose_tool",
        lambda **kwargs: podman.ComposeTool(argv=("podman-compose",), version="1.6.0"),
    )
    monkeypatch.setattr(orchestration_services, "_enqueue", lambda run_id: None)


def _all_at_once(count: int, request: Callable[[], Any]) -> list[Any]:
    """Run ``request`` in ``count`` threads released together; their responses."""
    barrier = threading.Barrier(count)
    responses: list[Any] = [None] * count

    def worker(i: int) -> None:
        try:
            barrier.wait()
            responses[i] = request()
        finally:
            connections.close_all()  # this thread's connection

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return responses


def _client(staff_user: Any) -> Callable[[], APIClient]:
    token = Token.objects.create(user=staff_user).key
    return lambda: APIClient(headers={"Authorization": f"Token {token}"})


def test_concurrent_saves_without_a_version_take_turns_and_all_succeed(staff_user):
    client = _client(staff_user)
    strategies = [s.value for s in StrategyName if s != StrategyName.MANUAL]

    numbers = itertools.count()

    def save() -> Any:
        body = {"strategy": strategies[next(numbers) % len(strategies)]}
        return client().put(URL, data=json.dumps(body), content_type="application/json")

    responses = _all_at_once(20, save)

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
    client = _client(staff_user)
    gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED)
    body = json.dumps({"strategy": "balanced", "version": 1})

    responses = _all_at_once(
        10, lambda: client().put(URL, data=body, content_type="application/json")
    )

    assert Counter(r.status_code for r in responses) == {200: 1, 409: 9}
    assert ConfigVersion.objects.count() == 2


def test_ten_concurrent_rollbacks_start_one_run_and_refuse_nine_cleanly(staff_user):
    for strategy in (StrategyName.VRAM_BASED, StrategyName.ISOLATION_FIRST):
        version = gpu_config_save(user=None, strategy=strategy).version
        ConfigVersion.objects.filter(pk=version.pk).update(applied_at=timezone.now())
    client = _client(staff_user)

    responses = _all_at_once(10, lambda: client().post("/api/system/gpu-config/rollback"))

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
