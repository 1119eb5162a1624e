"""POST /api/system/gpu-config/apply with PUT's body: save it if it differs, then apply."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devices.services import gpu_inventory_rescan
from gpuconfig.models import ConfigVersion
from orchestration import podman
from orchestration import services as orchestration_services
from orchestration.models import ApplyRun

pytestmark = pytest.mark.django_db

APPLY = "/api/system/gpu-config/apply"


@pytest.fixture(autouse=True)
def _inventory(db: Any) -> None:
    gpu_inventory_rescan()  # apply can start: the fixture startable (conftest.py)


def _post(client, body: dict[str, Any] | None):
    if body is None:
        return client.post(APPLY)
    return client.post(APPLY, data=json.dumps(body), content_type="application/json")


def test_a_body_is_saved_first_then_applied(staff_api, startable):
    response = _post(staff_api, {"strategy": "balanced"})
    assert response.status_code == 202, response.json()
    saved = ConfigVersion.objects.get()
    assert saved.strategy == "balanced"
    assert ApplyRun.objects.get().version == saved


def test_a_body_equal_to_the_saved_version_is_not_saved_again(staff_api, startable):
    assert _post(staff_api, {"strategy": "balanced"}).status_code == 202
    ApplyRun.objects.all().delete()
    assert _post(staff_api, {"strategy": "balanced", "version": 1}).status_code == 202
    assert ConfigVersion.objects.count() == 1


def test_without_a_body_the_saved_version_is_applied(staff_api, startable):
    assert _post(staff_api, None).status_code == 400, "nothing saved yet"
    assert _post(staff_api, {"strategy": "vram_based"}).status_code == 202


def test_a_body_without_a_strategy_or_with_a_bad_field_is_a_400_and_saves_nothing(
    staff_api, startable
):
    response = _post(staff_api, {"assignments": []})
    assert response.status_code == 400 and "strategy" in response.json()["errors"]
    response = _post(
        staff_api, {"strategy": "manual", "assignments": [{"service": "ai-llm", "gpu_index": 9}]}
    )
    assert response.status_code == 400
    assert "assignments[0].gpu_index" in response.json()["errors"]
    assert ConfigVersion.objects.count() == 0 and ApplyRun.objects.count() == 0


def test_a_stale_version_in_the_body_is_a_409(staff_api, startable):
    assert _post(staff_api, {"strategy": "vram_based"}).status_code == 202
    ApplyRun.objects.all().delete()
    assert _post(staff_api, {"strategy": "balanced"}).status_code == 202
    ApplyRun.objects.all().delete()
    response = _post(staff_api, {"strategy": "manual", "version": 1})
    assert response.status_code == 409
    assert ConfigVersion.objects.count() == 2


def test_a_viewer_may_not_apply(member_api, startable):
    assert _post(member_api, {"strategy": "balanced"}).status_code == 403


def test_a_refused_apply_after_its_body_was_saved_says_the_version_kept(
    staff_api, startable, monkeypatch
):
    def unavailable(**kwargs: Any) -> podman.ComposeTool:
        raise podman.ComposeUnavailable("podman not found: install podman")

    orchestration_services.forget_probe()
    monkeypatch.setattr(orchestration_services, "compose_tool", unavailable)
    response = _post(staff_api, {"strategy": "balanced"})

    assert response.status_code == 503
    assert response.json()["error"] == (
        "Cannot apply: podman not found: install podman. Your configuration was saved first "
        "as version 1; it is saved but not applied."
    )
    assert ConfigVersion.objects.get().strategy == "balanced"
    assert ApplyRun.objects.count() == 0
