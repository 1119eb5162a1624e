"""Several hosts: which host does what in a run (pure), and an apply that would touch a host
whose agent is not online is refused before anything changes anywhere."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from devices.hosts import (
    host_add,
    host_join,
    host_report_record,
    report_containers,
    report_parse,
)
from devices.models import Host
from devices.services import gpu_inventory_rescan
from gpuconfig.domain import Configuration, ResolvedAssignment
from gpuconfig.models import ConfigVersion
from orchestration.fanout import host_part, local_part, split_services
from orchestration.models import ApplyRun
from orchestration.selectors import reset_container_health_cache
from orchestration.services import forget_probe


def _config(**placed: int | None) -> Configuration:
    return Configuration(
        tuple(
            ResolvedAssignment(service=name, gpu_index=gpu, enabled=gpu is not None)
            for name, gpu in placed.items()
        )
    )


def test_a_move_between_hosts_starts_on_the_new_one_and_stops_on_the_old() -> None:
    before = _config(llm=0, clip=101, det=1, emb=201, off=102)
    after = _config(llm=100, clip=201, det=0, emb=201, off=None)
    split = split_services(["llm", "clip", "det", "off"], after, before)
    assert split.local == ["det"]
    assert split.local_stop == ["llm"]  # llm leaves this host for host 1
    assert split.remote[1].recreate == ["llm", "off"]  # off: switched off where it ran
    assert split.remote[1].stop == ["clip"]
    assert split.remote[2].recreate == ["clip"]
    assert split.remote[2].stop == []
    # emb did not change: no step, and host 2 gets only clip.
    assert split.touched_numbers() == [1, 2]


def test_a_host_gets_its_part_with_its_own_gpu_indexes() -> None:
    config = Configuration(
        (
            ResolvedAssignment(service="llm", gpu_index=0, gpu_uuid="GPU-a"),
            ResolvedAssignment(service="clip", gpu_index=101, gpu_uuid="GPU-b1"),
            ResolvedAssignment(service="det", gpu_index=203, gpu_device_index=3),
        )
    )
    part = host_part(config, 1)
    assert [(a.service, a.gpu_index, a.gpu_uuid) for a in part.assignments] == [
        ("clip", 1, "GPU-b1")
    ]
    assert [a.gpu_index for a in host_part(config, 2).assignments] == [3]
    assert [a.service for a in local_part(config).assignments] == ["llm"]


def test_a_service_running_on_other_hosts_is_stopped_there() -> None:
    after = _config(clip=101, det=0)
    split = split_services(["clip", "det"], after, None, {"clip": {0, 1, 2}, "det": {0, 2}})
    assert split.remote[1].recreate == ["clip"]
    assert split.local_stop == ["clip"]
    assert split.remote[2].stop == ["clip", "det"]
    assert split.local == ["det"]


def test_one_host_runs_split_nothing() -> None:
    before = _config(llm=0, clip=1)
    after = _config(llm=1, clip=1)
    split = split_services(["llm"], after, before)
    assert split.local == ["llm"]
    assert split.remote == {}


REPORT: dict[str, Any] = {
    "agent_version": "1.0",
    "gpus": [{"index": 0, "uuid": "GPU-b0", "name": "NVIDIA L4", "vram_total_mb": 23034}],
    "services": {
        "ai-clip": {"gpuconfig.model": "clip", "gpuconfig.vram_estimate_mb": "1200"},
    },
}


@pytest.fixture
def fake_compose(settings, tmp_path: Path) -> Iterator[None]:
    if shutil.which("podman") is None:
        pytest.skip("podman not installed: apt-get install podman (the probe comes first)")
    fake = tmp_path / "podman-compose"
    fake.write_text("#!/bin/sh\necho 'podman-compose version 1.6.0'\n")
    fake.chmod(0o755)
    settings.GPUCONFIG_COMPOSE_COMMAND = [str(fake)]
    forget_probe()
    yield
    forget_probe()


@pytest.mark.django_db
def test_an_apply_that_touches_an_offline_host_is_refused_naming_it(
    staff_api: APIClient, fake_compose: None, settings
) -> None:
    host, token = host_add("gpu-box-2")
    host, _ = host_join(token, agent_version="1.0")
    gpus, services, version = report_parse(REPORT)
    host_report_record(host, gpus, services, agent_version=version)
    gpu_inventory_rescan()
    body = {
        "strategy": "manual",
        "assignments": [
            {"service": "ai-llm", "gpu_index": 0},
            {"service": "ai-yolo26", "gpu_index": 0},
            {"service": "ai-florence", "gpu_index": 0},
            {"service": "ai-clip", "gpu_index": 100},
            {"service": "ai-enrichment", "gpu_index": 1},
        ],
    }
    saved = staff_api.put(
        "/api/system/gpu-config", data=json.dumps(body), content_type="application/json"
    )
    assert saved.status_code == 200, saved.json()
    assert ConfigVersion.objects.get().assignments["ai-clip"]["gpu_index"] == 100

    heard = timezone.now() - timedelta(minutes=5)
    Host.objects.filter(pk=host.pk).update(last_heartbeat_at=heard)
    answer = staff_api.post("/api/system/gpu-config/apply")

    assert answer.status_code == 409, answer.json()
    error = answer.json()["error"]
    assert error.startswith("Cannot apply: host gpu-box-2 is offline since ")
    assert "this apply would change ai-clip there. Nothing was changed." in error
    assert ApplyRun.objects.count() == 0
    assert not (Path(settings.GPUCONFIG_OUTPUT_DIR) / "docker-compose.gpu-override.yml").exists()


@pytest.mark.django_db
def test_the_status_judges_a_service_on_another_host_by_its_report(
    staff_api: APIClient, fake_compose: None, settings: Any
) -> None:
    """ai-clip applied to host gpu-box-2's GPU 0 (global 100): the status reads it from that
    host's report, drift included, and says "unknown" once the host is offline."""
    host, token = host_add("gpu-box-2")
    host, _ = host_join(token, agent_version="1.0")
    body = {
        **REPORT,
        "containers": {
            "ai-clip": {
                "id": "c1", "name": "ai_ai-clip_1", "status": "running", "running": True,
                "health": None, "cdi_devices": ["nvidia.com/gpu=0"], "device_nodes": [],
                "created": "", "env": {"GPUCONFIG_GPU_UUID": "GPU-b0", "GPUCONFIG_GPU_INDEX": "0"},
            }
        },
    }  # fmt: skip
    gpus, services, version = report_parse(body)
    host_report_record(
        host, gpus, services, agent_version=version, containers=report_containers(body, services)
    )
    ConfigVersion.objects.create(
        number=1,
        strategy="manual",
        applied_at=timezone.now(),
        assignments={
            "ai-clip": {"gpu_index": 100, "gpu_uuid": "GPU-b0", "gpu_device_index": 0},
        },
    )
    seen = staff_api.get("/api/system/gpu-config/status").json()["containers"]["ai-clip"]
    assert (seen["host"], seen["state"], seen["gpu"], seen["planned_gpu"]) == (
        "gpu-box-2",
        "running",
        100,
        100,
    )
    assert not seen["drifted"], seen

    # The host reports ai-clip running on its GPU 1 instead: drift, named as GPU Config does.
    body["containers"]["ai-clip"]["cdi_devices"] = ["nvidia.com/gpu=1"]
    body["gpus"] = [*body["gpus"], {**body["gpus"][0], "index": 1, "uuid": "GPU-b1"}]
    gpus, services, version = report_parse(body)
    host_report_record(
        host, gpus, services, agent_version=version, containers=report_containers(body, services)
    )
    reset_container_health_cache()  # the status is shared for a second: a new read
    seen = staff_api.get("/api/system/gpu-config/status").json()["containers"]["ai-clip"]
    assert seen["drifted"] and seen["gpu"] == 101, seen

    # Host gpu-box-2 also runs ai-llm, which the applied version places on this host: two
    # copies run, and the status says where the stray one is.
    ConfigVersion.objects.filter(number=1).update(
        assignments={
            "ai-clip": {"gpu_index": 100, "gpu_uuid": "GPU-b0", "gpu_device_index": 0},
            "ai-llm": {"gpu_index": 0},
        }
    )
    body["services"]["ai-llm"] = {"gpuconfig.vram_estimate_mb": "8000"}
    body["containers"]["ai-llm"] = {**body["containers"]["ai-clip"], "id": "l1", "env": {}}
    gpus, services, version = report_parse(body)
    host_report_record(
        host, gpus, services, agent_version=version, containers=report_containers(body, services)
    )
    reset_container_health_cache()
    llm = staff_api.get("/api/system/gpu-config/status").json()["containers"]["ai-llm"]
    # (No container of it here either, in this test: both are said.)
    assert llm["drifted"], llm
    assert llm["drift_reason"].endswith("; also running on host gpu-box-2"), llm

    Host.objects.filter(pk=host.pk).update(last_heartbeat_at=timezone.now() - timedelta(hours=1))
    reset_container_health_cache()
    status = staff_api.get("/api/system/gpu-config/status").json()
    seen = status["containers"]["ai-clip"]
    assert (seen["state"], seen["host_state"], seen["drifted"]) == ("unknown", "offline", False)
    assert "ai-clip: host gpu-box-2 is offline since " in status["summary"]
    assert status["summary"].endswith("what runs there is not known now")
