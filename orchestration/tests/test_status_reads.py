"""Status reads share one look at the containers: podman runs at most once per interval."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from gpuconfig.models import ConfigVersion
from orchestration import selectors
from orchestration.models import ApplyRun, RunStatus

pytestmark = pytest.mark.django_db(transaction=True)

STATUS = "/api/system/gpu-config/status"


@pytest.fixture
def podman_reads(monkeypatch) -> list[int]:
    """Count the container reads behind the status (each is a `podman ps` + inspect)."""
    reads: list[int] = []

    def counted() -> dict[str, Any]:
        reads.append(1)
        return {
            "available": True,
            "unavailable_reason": "",
            "containers": {"ai-clip": {"state": "running", "health": None, "gpu": len(reads)}},
            "drifted": [],
            "summary": "All services running as applied",
        }

    monkeypatch.setattr(selectors, "container_health", counted)
    return reads


def test_many_clients_polling_the_status_cause_one_podman_read(member_api, settings, podman_reads):
    settings.GPUCONFIG_SAMPLE_SECONDS = 60
    answers: list[int] = []

    def poll() -> None:
        try:
            for _ in range(5):
                answers.append(member_api.get(STATUS).status_code)
        finally:
            connection.close()  # the test client keeps each thread's connection open

    # Fewer threads than the connection pool holds: the test client never hands them back.
    threads = [threading.Thread(target=poll) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 30
    assert len(podman_reads) == 1


def test_a_run_that_moves_on_reads_the_containers_again_at_once(member_api, settings, podman_reads):
    settings.GPUCONFIG_SAMPLE_SECONDS = 60
    version = ConfigVersion.objects.create(number=1, strategy="manual", assignments={})
    run = ApplyRun.objects.create(version=version, status=RunStatus.RUNNING)
    assert member_api.get(STATUS).json()["containers"]["ai-clip"]["gpu"] == 1
    assert member_api.get(STATUS).json()["containers"]["ai-clip"]["gpu"] == 1

    ApplyRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)
    # The answer that reports the finished run shows the containers as the run left them.
    body = member_api.get(STATUS).json()
    assert body["run"]["status"] == "succeeded"
    assert body["containers"]["ai-clip"]["gpu"] == 2
    assert len(podman_reads) == 2


def test_the_containers_are_read_again_after_the_interval(member_api, settings, podman_reads):
    settings.GPUCONFIG_SAMPLE_SECONDS = 0.1
    member_api.get(STATUS)
    threading.Event().wait(0.15)
    member_api.get(STATUS)
    assert len(podman_reads) == 2
