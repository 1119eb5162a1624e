"""Maintenance (cordon) by staff: the API, manage.py, restarts and re-scans; a pin onto a
cordoned GPU warns in the preview and Apply refuses it."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from devices.models import GpuDevice
from devices.services import gpu_inventory_rescan, reset_sampler
from orchestration.models import ApplyRun
from orchestration.services import forget_probe

pytestmark = pytest.mark.django_db

MAINTENANCE = "/api/system/gpus/1/maintenance"


@pytest.fixture(autouse=True)
def _inventory() -> None:
    reset_sampler()
    gpu_inventory_rescan()
    forget_probe()


def test_staff_put_a_gpu_in_maintenance_and_it_survives_a_rescan(staff_api: APIClient) -> None:
    response = staff_api.post(MAINTENANCE, {"reason": "Fan replaced on Friday"}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["active"] is True
    assert response.json()["by"] == "operator"
    gpu_inventory_rescan()
    reset_sampler()
    listed = staff_api.get("/api/system/gpus").json()["gpus"][1]["maintenance"]
    assert listed["active"] is True
    assert listed["reason"] == "Fan replaced on Friday"
    assert listed["by"] == "operator"
    assert listed["since"] is not None
    assert listed["automatic"] is False

    response = staff_api.delete(MAINTENANCE)

    assert response.status_code == 200
    assert GpuDevice.objects.get(gpu_index=1).maintenance is False


def test_a_reason_is_required_and_nothing_changes_without_one(staff_api: APIClient) -> None:
    response = staff_api.post(MAINTENANCE, {"reason": "   "}, format="json")

    assert response.status_code == 400
    assert response.json()["error"] == "Give a reason for the maintenance (what is being done)."
    assert GpuDevice.objects.get(gpu_index=1).maintenance is False


def test_maintenance_is_refused_twice_for_unknown_gpus_and_for_read_only_users(
    staff_api: APIClient, member_api: APIClient
) -> None:
    assert staff_api.post(MAINTENANCE, {"reason": "x"}, format="json").status_code == 200
    again = staff_api.post(MAINTENANCE, {"reason": "y"}, format="json")
    assert again.status_code == 400
    assert again.json()["error"] == "GPU 1 is already in maintenance (x)."

    missing = staff_api.post("/api/system/gpus/7/maintenance", {"reason": "x"}, format="json")
    assert missing.status_code == 404
    assert missing.json()["error"] == "There is no GPU 7: re-scan the GPUs or pick another one."

    assert member_api.delete(MAINTENANCE).status_code == 403
    assert GpuDevice.objects.get(gpu_index=1).maintenance is True


def test_manage_py_cordons_and_uncordons() -> None:
    out = StringIO()
    call_command("cordon_gpu", "0", "--reason", "Driver upgrade", "--by", "ops", stdout=out)

    assert "GPU 0: In maintenance since " in out.getvalue()
    assert "set by ops: Driver upgrade" in out.getvalue()
    with pytest.raises(CommandError, match="GPU 0 is already in maintenance"):
        call_command("cordon_gpu", "0", "--reason", "again")

    out = StringIO()
    call_command("uncordon_gpu", "0", stdout=out)
    assert out.getvalue().strip() == "GPU 0 is out of maintenance: plans may use it again."
    with pytest.raises(CommandError, match="GPU 0 is not in maintenance"):
        call_command("uncordon_gpu", "0")


def _put(client: APIClient, body: dict[str, Any]) -> Any:
    return client.put(
        "/api/system/gpu-config", data=json.dumps(body), content_type="application/json"
    )


def test_automatic_strategies_place_nothing_new_on_a_cordoned_gpu(staff_api: APIClient) -> None:
    staff_api.post("/api/system/gpus/0/maintenance", {"reason": "Reseating"}, format="json")

    for strategy in ("vram_based", "balanced", "latency_optimized", "isolation_first"):
        preview = staff_api.post(
            "/api/system/gpu-config/preview", {"strategy": strategy}, format="json"
        )
        assert preview.status_code == 200, preview.json()
        placed = {a["service"]: a["gpu_index"] for a in preview.json()["assignments"]}
        assert set(placed.values()) == {1}, (strategy, placed)


def test_a_pin_onto_a_cordoned_gpu_warns_and_apply_refuses_it(staff_api: APIClient) -> None:
    staff_api.post(MAINTENANCE, {"reason": "Fan replaced on Friday"}, format="json")
    body = {"strategy": "vram_based", "assignments": [{"service": "ai-clip", "gpu_index": 1}]}

    saved = _put(staff_api, body)

    assert saved.status_code == 200, saved.json()
    messages = staff_api.get("/api/system/gpu-config").json()["warnings"]
    assert (
        "ai-clip is pinned to GPU 1, which is in maintenance: it takes no new services, and "
        "Apply refuses this pin"
    ) in messages
    response = staff_api.post("/api/system/gpu-config/apply")
    assert response.status_code == 400
    assert response.json()["error"] == (
        "Cannot apply: ai-clip would start on GPU 1, which is in maintenance (Fan replaced on "
        "Friday); pin it to another GPU or take GPU 1 out of maintenance. Nothing was changed."
    )
    assert ApplyRun.objects.count() == 0


def _placed(body: dict[str, Any]) -> dict[str, int]:
    return {a["service"]: a["gpu_index"] for a in body["assignments"]}


def test_services_stay_on_a_cordoned_gpu_until_it_is_drained(staff_api: APIClient) -> None:
    assert _put(staff_api, {"strategy": "vram_based"}).status_code == 200
    on_gpu_0 = {
        s for s, i in _placed(staff_api.get("/api/system/gpu-config").json()).items() if i == 0
    }
    assert on_gpu_0, "the reference plan puts services on GPU 0"
    staff_api.post("/api/system/gpus/0/maintenance", {"reason": "Reseating"}, format="json")

    kept = staff_api.get("/api/system/gpu-config/preview", {"strategy": "vram_based"}).json()
    assert {s for s, i in _placed(kept).items() if i == 0} == on_gpu_0
    assert kept["moves"] == []
    # Held there because they run there, not pinned: nothing to warn about or refuse.
    assert not [w for w in kept["warnings"] if "maintenance" in w]

    drained = staff_api.post("/api/system/gpus/0/drain")
    assert drained.status_code == 200
    assert drained.json()["draining"] is True
    preview = staff_api.get("/api/system/gpu-config/preview", {"strategy": "vram_based"}).json()

    assert 0 not in _placed(preview).values()
    assert set(preview["moves"]) == on_gpu_0
    assert _put(staff_api, {"strategy": "vram_based"}).status_code == 200
    assert 0 not in _placed(staff_api.get("/api/system/gpu-config").json()).values()


def test_draining_a_gpu_not_in_maintenance_is_refused(staff_api: APIClient) -> None:
    response = staff_api.post("/api/system/gpus/0/drain")

    assert response.status_code == 400
    assert response.json()["error"] == (
        "GPU 0 is not in maintenance: put it in maintenance before draining it."
    )


def test_a_gpu_index_that_is_not_a_number_is_a_json_404(staff_api: APIClient) -> None:
    response = staff_api.post("/api/system/gpus/-3/maintenance", {"reason": "x"}, format="json")

    assert response.status_code == 404
    assert response.json()["error"] == ("There is no GPU '-3': a GPU index is a whole number >= 0.")
