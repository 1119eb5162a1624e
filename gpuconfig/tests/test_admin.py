"""The admin: every table listed for staff, raw edits of settings validated."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from devices.services import gpu_inventory_rescan
from gpuconfig.models import SystemSetting

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
    assert "VRAM reserve (MB): must be between 0 and 65536 MB, got -5" in response.content.decode()
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
