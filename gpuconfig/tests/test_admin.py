"""The admin: every table listed for staff, raw edits of settings validated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from devices.services import gpu_inventory_rescan
from gpuconfig.models import ConfigVersion, GpuConfiguration, SystemSetting

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db) -> Client:
    user = User.objects.create_superuser("root-admin", password="admin-pass-1")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/admin/devices/gpudevice/",
        "/admin/gpuconfig/gpuconfiguration/",
        "/admin/gpuconfig/systemsetting/",
        "/admin/gpuconfig/configversion/",
        "/admin/orchestration/applyrun/",
    ],
)
def test_every_table_has_an_admin_list(admin_client, path):
    gpu_inventory_rescan()
    response = admin_client.get(path)
    assert response.status_code == 200


def test_gpu_list_shows_the_reference_gpus(admin_client):
    gpu_inventory_rescan()
    content = admin_client.get("/admin/devices/gpudevice/").content.decode()
    assert "NVIDIA RTX A5500" in content and "NVIDIA RTX A400" in content


def test_a_bad_setting_value_is_refused_in_the_admin(admin_client):
    response = admin_client.post(
        "/admin/gpuconfig/systemsetting/add/", {"key": "vram_reserve_mb", "value": "-5"}
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "VRAM reserve (MiB): must be between 0 and 65536 MiB, got -5" in page
    assert not SystemSetting.objects.exists()


def test_a_good_setting_value_is_stored(admin_client):
    response = admin_client.post(
        "/admin/gpuconfig/systemsetting/add/",
        {"key": "gpu_assignment_strategy", "value": '{"default": "balanced"}'},
    )
    assert response.status_code == 302
    assert SystemSetting.objects.get().value == {"default": "balanced"}


def test_non_staff_cannot_reach_the_admin(member_user):
    client = Client()
    client.force_login(member_user)
    response = client.get("/admin/gpuconfig/gpuconfiguration/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


# --- assignments are changed on the page, not in the admin (issue 12) ---------------------------


def _assignments_file() -> Path:
    return Path(django_settings.GPUCONFIG_OUTPUT_DIR) / "gpu-assignments.yml"


def _save_good(staff_api: APIClient) -> Any:
    gpu_inventory_rescan()
    body = {"strategy": "vram_based", "assignments": [{"service": "ai-llm", "gpu_index": 0}]}
    return staff_api.put(
        "/api/system/gpu-config", data=json.dumps(body), content_type="application/json"
    )


def test_the_admin_cannot_pin_a_service_to_a_gpu_that_does_not_exist(admin_client, staff_api):
    assert _save_good(staff_api).status_code == 200
    row = GpuConfiguration.objects.get(service_name="ai-llm")
    before = _assignments_file().read_text()

    response = admin_client.post(
        f"/admin/gpuconfig/gpuconfiguration/{row.pk}/change/",
        {"service_name": "ai-llm", "gpu_index": "7", "strategy": "manual", "enabled": "on"},
    )

    assert response.status_code == 403
    row.refresh_from_db()
    assert row.gpu_index == 0
    assert ConfigVersion.objects.count() == 1
    assert _assignments_file().read_text() == before


def test_the_admin_shows_assignments_read_only_with_a_link_to_the_page(admin_client, staff_api):
    assert _save_good(staff_api).status_code == 200

    listing = admin_client.get("/admin/gpuconfig/gpuconfiguration/").content.decode()
    row = GpuConfiguration.objects.get(service_name="ai-llm")
    detail = admin_client.get(f"/admin/gpuconfig/gpuconfiguration/{row.pk}/change/")

    assert 'change assignments on <a href="/settings/gpu/">Settings &rsaquo; GPU' in listing
    assert "Add gpu configuration" not in listing
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert (
        admin_client.post("/admin/gpuconfig/configversion/1/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert ConfigVersion.objects.count() == 1
