"""GET /api/system/gpus and POST /api/system/gpu-config/detect: shape, freshness, permissions."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from devices import services
from devices.models import GpuDevice

pytestmark = pytest.mark.django_db


def test_anonymous_gets_403_on_every_inventory_endpoint(anon_api):
    assert anon_api.get("/api/system/gpus").status_code == 403
    assert anon_api.post("/api/system/gpu-config/detect").status_code == 403
    assert GpuDevice.objects.count() == 0


def test_member_reads_gpus_in_the_designs_shape(member_api):
    response = member_api.get("/api/system/gpus", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    body = response.json()
    assert [g["index"] for g in body["gpus"]] == [0, 1]
    a5500 = body["gpus"][0]
    assert a5500["name"] == "NVIDIA RTX A5500"
    assert a5500["vram_total_mb"] == 24564
    assert a5500["vram_used_mb"] == 19304
    assert a5500["compute_capability"] == "8.6"
    assert a5500["present"] is True
    assert body["source"] == "simulated"
    assert body["error"] is None
    assert 0 <= body["age_seconds"] < 5


def test_member_may_not_rescan(member_api):
    response = member_api.post("/api/system/gpu-config/detect")
    assert response.status_code == 403
    assert "staff" in response.json()["error"]
    assert GpuDevice.objects.count() == 0


def test_staff_rescan_updates_the_inventory(staff_api):
    response = staff_api.post("/api/system/gpu-config/detect")

    assert response.status_code == 200
    assert response.json()["added"] == [0, 1]
    assert GpuDevice.objects.filter(present=True).count() == 2


def test_token_authentication_works_for_api_clients(staff_user):
    token = Token.objects.create(user=staff_user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/system/gpus").status_code == 200
    assert client.post("/api/system/gpu-config/detect").status_code == 200


def test_polling_does_not_detect_per_request(member_api, settings):
    # Polls within one sample interval share one detection (the interval is long here, so
    # that a loaded machine's slow polls stay inside it).
    settings.GPUCONFIG_SAMPLE_SECONDS = 60
    before = services._sampler.detections
    for _ in range(20):
        assert member_api.get("/api/system/gpus").status_code == 200
    assert services._sampler.detections - before == 1


def test_disappeared_gpu_is_listed_with_a_mark(staff_api, request):
    staff_api.post("/api/system/gpu-config/detect")
    request.getfixturevalue("a400_removed")
    assert staff_api.post("/api/system/gpu-config/detect").json()["disappeared"] == [1]

    gpus = staff_api.get("/api/system/gpus").json()["gpus"]
    assert [(g["index"], g["present"]) for g in gpus] == [(0, True), (1, False)]
    assert gpus[1]["name"] == "NVIDIA RTX A400"


def test_failed_rescan_answers_502_with_the_reason_and_keeps_inventory(
    staff_api, settings, tmp_path
):
    staff_api.post("/api/system/gpu-config/detect")
    bad = tmp_path / "bad.json"
    bad.write_text('{"gpus": "none"}')
    settings.GPUCONFIG_SIMULATED_GPUS = bad

    response = staff_api.post("/api/system/gpu-config/detect")

    assert response.status_code == 502
    assert "bad.json" in response.json()["error"]
    assert GpuDevice.objects.filter(present=True).count() == 2


def test_browsable_api_renders_for_a_logged_in_user(member_user):
    from django.test import Client

    client = Client()
    client.force_login(member_user)
    response = client.get("/api/system/gpus", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"NVIDIA RTX A5500" in response.content
    assert b"Gpu List" in response.content
