"""Another host's GPUs as plans and warnings see them: a local re-scan never marks them
disappeared, and a service on the GPU of a host that went offline stays there, with a
warning that says so (not "in maintenance", not silently moved)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from devices.hosts import host_add, host_join, host_report_record, report_parse
from devices.models import GpuDevice, Host
from devices.services import gpu_inventory_rescan

pytestmark = pytest.mark.django_db

BODY = {
    "strategy": "manual",
    "assignments": [
        {"service": "ai-llm", "gpu_index": 0},
        {"service": "ai-yolo26", "gpu_index": 0},
        {"service": "ai-florence", "gpu_index": 0},
        {"service": "ai-clip", "gpu_index": 100},
        {"service": "ai-enrichment", "gpu_index": 1},
    ],
}


def _box() -> Host:
    host, token = host_add("gpu-box-2")
    host, _ = host_join(token, agent_version="1.0")
    report: dict[str, Any] = {
        "gpus": [{"index": 0, "uuid": "GPU-b0", "name": "NVIDIA L4", "vram_total_mb": 23034}],
        "services": {"ai-clip": {"gpuconfig.vram_estimate_mb": "1200"}},
    }
    gpus, services, version = report_parse(report)
    host_report_record(host, gpus, services, agent_version=version)
    return host


def test_a_local_rescan_leaves_other_hosts_gpus_alone() -> None:
    _box()
    result = gpu_inventory_rescan()
    assert result.disappeared == []
    assert GpuDevice.objects.get(gpu_index=100).present
    assert sorted(
        GpuDevice.objects.filter(host__is_local=True).values_list("gpu_index", flat=True)
    ) == [0, 1]


def test_a_service_on_an_offline_host_stays_there_and_the_warning_says_why(
    staff_api: APIClient, staff: Client
) -> None:
    host = _box()
    gpu_inventory_rescan()
    saved = staff_api.put(
        "/api/system/gpu-config", data=json.dumps(BODY), content_type="application/json"
    )
    assert saved.status_code == 200, saved.json()
    heard = timezone.now() - timedelta(hours=1)
    Host.objects.filter(pk=host.pk).update(last_heartbeat_at=heard)

    warnings = staff_api.get("/api/system/gpu-config").json()["warnings"]
    expected = (
        f"ai-clip is on gpu-box-2 / GPU 0, but host gpu-box-2 is offline since "
        f"{heard:%Y-%m-%d %H:%M} UTC: it stays there, and Apply cannot change that host "
        "until its agent is back"
    )
    assert expected in warnings, warnings
    assert not any("in maintenance" in w for w in warnings), warnings
    # A re-plan keeps it there: the host is out, not the service's place.
    preview = staff_api.post(
        "/api/system/gpu-config/preview",
        data=json.dumps({"strategy": "balanced"}),
        content_type="application/json",
    ).json()
    clip = next(a for a in preview["assignments"] if a["service"] == "ai-clip")
    assert clip["gpu_index"] == 100
    assert "host gpu-box-2 is offline since" in staff.get("/settings/gpu/").content.decode()
