"""Apply with a body that asks for the re-plan from scratch applies that plan (issue 19).

The body's ``from_scratch`` was accepted and then dropped: the save re-planned keeping
running services in place, so the version applied was not the one previewed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devices.services import gpu_inventory_rescan
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import gpu_config_save
from orchestration.models import ApplyRun

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _inventory(db: Any) -> None:
    gpu_inventory_rescan()


def _gpus(body: dict[str, Any]) -> dict[str, int | None]:
    return {a["service"]: a["gpu_index"] for a in body["assignments"]}


def test_apply_with_from_scratch_applies_the_re_plan_the_preview_showed(staff_api, startable):
    gpu_config_save(user=None, strategy=StrategyName.ISOLATION_FIRST)
    body = {"strategy": "balanced", "from_scratch": True}
    preview = staff_api.post("/api/system/gpu-config/preview", body, format="json").json()
    kept = staff_api.post(
        "/api/system/gpu-config/preview", {"strategy": "balanced"}, format="json"
    ).json()
    assert _gpus(preview) != _gpus(kept), "the scenario: the two plans differ"

    response = staff_api.post(
        "/api/system/gpu-config/apply", json.dumps(body), content_type="application/json"
    )

    assert response.status_code == 202, response.json()
    applied = ApplyRun.objects.get().version
    assert applied == ConfigVersion.objects.order_by("-number").first()
    assert {n: a["gpu_index"] for n, a in applied.assignments.items()} == _gpus(preview)
