"""GPU hosts over the API: staff add one and get a one-time join token; its agent joins once
for a credential, reports its own GPUs and services with it, and nothing else; a silent agent
reads offline; a revoked credential is refused everywhere."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.test import APIClient

from devices.hosts import hosts_mark_silent_offline
from devices.models import GpuDevice, Host, HostService, HostStatus

pytestmark = pytest.mark.django_db

REPORT: dict[str, Any] = {
    "agent_version": "gpuconfig-agent 1.0",
    "gpus": [
        {"index": 0, "uuid": "GPU-b0", "name": "NVIDIA L4", "vram_total_mb": 23034},
        {"index": 1, "uuid": "GPU-b1", "name": "NVIDIA L4", "vram_total_mb": 23034,
         "vram_used_mb": 1034},
    ],
    "services": {
        "ai-clip": {"gpuconfig.model": "clip", "gpuconfig.vram_estimate_mb": "1200"},
        "ai-llm": {"gpuconfig.model": "llama", "gpuconfig.vram_estimate_mb": "8000"},
    },
}  # fmt: skip


def _add(staff_api: APIClient, name: str = "gpu-box-2") -> dict[str, Any]:
    answer = staff_api.post("/api/hosts", {"name": name}, format="json")
    assert answer.status_code == 201, answer.content
    return answer.json()


def _join(token: str) -> Any:
    return APIClient().post(
        "/api/hosts/join", {"token": token, "agent_version": "1.0"}, format="json"
    )


def _agent(credential: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credential}")
    return client


def test_a_host_joins_once_and_reports_its_gpus_and_services(staff_api: APIClient) -> None:
    added = _add(staff_api)
    assert added["state"] == "joining"
    assert added["queue"] == "host.gpu-box-2"
    token = added["join_token"]
    # The command the operator runs on the host names it, the token and the URL.
    assert f"GPUCONFIG_JOIN_TOKEN={token}" in added["agent_command"]
    assert "GPUCONFIG_HOST_NAME=gpu-box-2" in added["agent_command"]
    assert "docker-compose.agent.yml up -d" in added["agent_command"]

    joined = _join(token)
    assert joined.status_code == 200, joined.content
    credential = joined.json()["credential"]
    assert joined.json()["state"] == "online"
    # The token works once.
    again = _join(token)
    assert again.status_code == 401
    assert "already used" in again.json()["error"]

    reported = _agent(credential).post("/api/hosts/report", REPORT, format="json")
    assert reported.status_code == 200, reported.content
    assert reported.json()["services"] == ["ai-clip", "ai-llm"]
    host = Host.objects.get(name="gpu-box-2")
    # Its GPUs take global indexes from 100 x its number; the index there is kept.
    gpus = list(GpuDevice.objects.filter(host=host).order_by("gpu_index"))
    assert [(g.gpu_index, g.device_index, g.uuid) for g in gpus] == [
        (100, 0, "GPU-b0"),
        (101, 1, "GPU-b1"),
    ]
    assert gpus[1].vram_available_mb == 22000
    assert host.agent_version == "gpuconfig-agent 1.0"
    listed = {h["name"]: h for h in staff_api.get("/api/hosts").json()}
    assert listed["gpu-box-2"]["gpus"] == [100, 101]
    assert listed["local"]["local"] is True
    # The GPUs API lists them beside this host's, each with its host.
    shown = {g["index"]: g for g in staff_api.get("/api/system/gpus").json()["gpus"]}
    assert [(i, g["host"], g["host_state"]) for i, g in sorted(shown.items())] == [
        (0, "local", "online"),
        (1, "local", "online"),
        (100, "gpu-box-2", "online"),
        (101, "gpu-box-2", "online"),
    ]
    assert shown[101]["name"] == "NVIDIA L4"
    assert shown[101]["vram_used_mb"] == 1034

    # A GPU no longer reported stays known but absent; a service no longer defined goes.
    smaller = {**REPORT, "gpus": REPORT["gpus"][:1], "services": {"ai-clip": {}}}
    assert _agent(credential).post("/api/hosts/report", smaller, format="json").status_code == 200
    assert not GpuDevice.objects.get(gpu_index=101).present
    assert list(HostService.objects.filter(host=host).values_list("service_name", flat=True)) == [
        "ai-clip"
    ]


def test_a_report_is_refused_without_a_credential_or_with_a_bad_body(
    staff_api: APIClient,
) -> None:
    credential = _join(_add(staff_api)["join_token"]).json()["credential"]
    nobody = APIClient().post("/api/hosts/report", REPORT, format="json")
    assert nobody.status_code == 401
    assert nobody["WWW-Authenticate"] == 'Bearer realm="gpuconfig-host"'
    wrong = _agent("gch_not-a-credential").post("/api/hosts/report", REPORT, format="json")
    assert wrong.status_code == 401
    # A user session is no host: staff cannot report for a host either.
    assert staff_api.post("/api/hosts/report", REPORT, format="json").status_code == 401
    before = GpuDevice.objects.count()
    for body, field in [
        ({**REPORT, "gpus": [{**REPORT["gpus"][0], "index": 100}]}, "gpus[0].index"),
        ({**REPORT, "gpus": [{**REPORT["gpus"][0], "vram_total_mb": 0}]}, "gpus[0].vram_total_mb"),
        ({**REPORT, "gpus": [REPORT["gpus"][0], REPORT["gpus"][0]]}, "gpus"),
        ({**REPORT, "services": {"ai llm": {}}}, "services"),
        ({**REPORT, "services": {"ai-llm": {"other.label": "x"}}}, "services.ai-llm"),
        ({**REPORT, "host": "local"}, "host"),
    ]:
        answer = _agent(credential).post("/api/hosts/report", body, format="json")
        assert answer.status_code == 400, body
        assert field in answer.json()["errors"], answer.json()
    assert GpuDevice.objects.count() == before


def test_a_revoked_host_is_refused_and_leaves_the_plans(staff_api: APIClient) -> None:
    credential = _join(_add(staff_api)["join_token"]).json()["credential"]
    assert _agent(credential).post("/api/hosts/report", REPORT, format="json").status_code == 200
    revoked = staff_api.post("/api/hosts/gpu-box-2/revoke")
    assert revoked.status_code == 200
    assert revoked.json()["state"] == "revoked"
    answer = _agent(credential).post("/api/hosts/report", REPORT, format="json")
    assert answer.status_code == 401


def test_only_staff_add_or_revoke_hosts(member_api: APIClient, anon_api: APIClient) -> None:
    assert member_api.get("/api/hosts").status_code == 200
    assert member_api.post("/api/hosts", {"name": "x"}, format="json").status_code == 403
    assert anon_api.get("/api/hosts").status_code == 403
    assert Host.objects.filter(is_local=False).count() == 0


def test_bad_host_names_are_refused(staff_api: APIClient) -> None:
    for name in ["", "Box 2", "-box", "a" * 64, "box_2"]:
        answer = staff_api.post("/api/hosts", {"name": name}, format="json")
        assert answer.status_code == 400, name
    _add(staff_api, "box")
    twice = staff_api.post("/api/hosts", {"name": "box"}, format="json")
    assert twice.status_code == 400
    assert "already exists" in twice.json()["errors"]["name"]
    assert staff_api.post("/api/hosts/local/revoke").status_code == 400
    assert staff_api.post("/api/hosts/nowhere/revoke").status_code == 404


def test_an_expired_join_token_is_refused_and_a_new_one_works(staff_api: APIClient) -> None:
    token = _add(staff_api)["join_token"]
    Host.objects.filter(name="gpu-box-2").update(
        join_token_expires_at=timezone.now() - timedelta(seconds=1)
    )
    expired = _join(token)
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]
    fresh = staff_api.post("/api/hosts/gpu-box-2/join-token").json()["join_token"]
    assert _join(token).status_code == 401  # the old one no longer works at all
    assert _join(fresh).status_code == 200
    # Once joined, no new token: revoke and add again.
    assert staff_api.post("/api/hosts/gpu-box-2/join-token").status_code == 400


def test_a_revoked_host_gets_no_new_join_token(staff_api: APIClient) -> None:
    token = _add(staff_api)["join_token"]
    assert staff_api.post("/api/hosts/gpu-box-2/revoke").status_code == 200
    refused = staff_api.post("/api/hosts/gpu-box-2/join-token")
    assert refused.status_code == 400
    assert "revoked" in refused.json()["error"]
    assert _join(token).status_code == 401  # nor does its old token work


def test_a_silent_agent_reads_offline_since_it_was_last_heard(staff_api: APIClient) -> None:
    _join(_add(staff_api)["join_token"])
    heard = timezone.now() - timedelta(seconds=31)
    Host.objects.filter(name="gpu-box-2").update(last_heartbeat_at=heard)
    # The page and the API judge from the heartbeat's age even before the check task writes.
    listed = {h["name"]: h for h in staff_api.get("/api/hosts").json()}
    assert listed["gpu-box-2"]["state"] == "offline"
    assert hosts_mark_silent_offline() == ["gpu-box-2"]
    host = Host.objects.get(name="gpu-box-2")
    assert host.status == HostStatus.OFFLINE
    assert host.offline_since == heard
    assert listed["local"]["state"] == "online"


def test_add_host_command_prints_the_token_once(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("add_host", "rack-3", "--url", "https://gpuconfig.example/")
    out = capsys.readouterr().out
    assert "Host rack-3 added (queue host.rack-3)" in out
    assert "GPUCONFIG_URL=https://gpuconfig.example/" in out
    token = next(line.split("=", 1)[1] for line in out.splitlines() if "JOIN_TOKEN=" in line)
    assert _join(token).status_code == 200
    with pytest.raises(CommandError, match="already exists"):
        call_command("add_host", "rack-3")


def test_existing_gpus_are_on_the_local_host() -> None:
    gpu = GpuDevice.objects.create(gpu_index=0, name="NVIDIA RTX A5500", vram_total_mb=24564)
    assert gpu.host.is_local
    assert gpu.host.name == "local"
    assert gpu.host.index_base == 0


def test_a_report_carries_each_service_container_checked(staff_api: APIClient) -> None:
    credential = _join(_add(staff_api)["join_token"]).json()["credential"]
    clip = {
        "id": "abc123",
        "name": "ai_ai-clip_1",
        "status": "running",
        "running": True,
        "health": "healthy",
        "cdi_devices": ["nvidia.com/gpu=1"],
        "device_nodes": [],
        "created": "2026-12-03T10:00:00+00:00",
        "env": {"GPUCONFIG_GPU_UUID": "GPU-b1", "GPUCONFIG_GPU_INDEX": "1"},
    }
    body = {**REPORT, "containers": {"ai-clip": clip, "ai-llm": None}}
    assert _agent(credential).post("/api/hosts/report", body, format="json").status_code == 200
    stored = {s.service_name: s.container for s in HostService.objects.all()}
    assert stored == {"ai-clip": clip, "ai-llm": None}
    # A report without containers (the agent could not read podman) keeps what was stored.
    assert _agent(credential).post("/api/hosts/report", REPORT, format="json").status_code == 200
    assert HostService.objects.get(service_name="ai-clip").container == clip
    for bad, field in [
        ({"ai-unknown": None}, "containers"),
        ({"ai-clip": {**clip, "running": "yes"}}, "containers.ai-clip.running"),
        ({"ai-clip": {**clip, "secret": "x"}}, "containers.ai-clip"),
        ({"ai-clip": {**clip, "env": {f"V{i}": "x" for i in range(40)}}}, "containers.ai-clip.env"),
        (
            {"ai-clip": {**clip, "cdi_devices": "nvidia.com/gpu=1"}},
            "containers.ai-clip.cdi_devices",
        ),
    ]:
        answer = _agent(credential).post(
            "/api/hosts/report", {**REPORT, "containers": bad}, format="json"
        )
        assert answer.status_code == 400, bad
        assert field in answer.json()["errors"], answer.json()
    assert HostService.objects.get(service_name="ai-clip").container == clip


def test_the_admin_lists_hosts_and_puts_one_in_maintenance(
    staff_api: APIClient, admin_client: Any
) -> None:
    _join(_add(staff_api)["join_token"])
    host = Host.objects.get(name="gpu-box-2")
    page = admin_client.get("/admin/devices/host/")
    assert page.status_code == 200
    assert b"gpu-box-2" in page.content
    assert b"join_token_hash" not in page.content
    form = admin_client.get(f"/admin/devices/host/{host.pk}/change/")
    assert b"credential" not in form.content.lower()
    changed = admin_client.post(
        f"/admin/devices/host/{host.pk}/change/",
        {"name": "gpu-box-2", "maintenance": "on", "compose_project": ""},
    )
    assert changed.status_code == 302, changed.content[:2000]
    listed = {h["name"]: h for h in staff_api.get("/api/hosts").json()}
    assert listed["gpu-box-2"]["state"] == "maintenance"
    assert admin_client.post(f"/admin/devices/host/{host.pk}/delete/").status_code == 403
