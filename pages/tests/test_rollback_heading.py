"""The apply-status heading names the version a rollback restored from the stored origin
(``ConfigVersion.restored_from``, issue 18), whatever its warning text says; the origin itself:
gpuconfig/tests/test_restored_from.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from devices.services import gpu_inventory_rescan
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import gpu_config_restore, gpu_config_save
from orchestration import selectors as orchestration_selectors
from orchestration.models import ApplyRun, RunKind, RunStatus

PAGE = "/settings/gpu/"
HX = {"HX-Request": "true"}
SERVICES = ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment")
# The container status reads podman; these tests check the page, not podman.
RUNNING = {
    "available": True,
    "unavailable_reason": "",
    "containers": {
        name: {"state": "running", "health": None, "gpu": 0, "drifted": False, "drift_reason": ""}
        for name in SERVICES
    },
    "drifted": [],
    "summary": "All services running as applied",
}


def _saved(strategy: StrategyName) -> ConfigVersion:
    return gpu_config_save(user=None, strategy=strategy).version


def _run_heading(client: Client) -> str:
    """The apply-status region's heading of the latest run, as the page shows it."""
    html = client.get(PAGE, {"part": "apply-status"}, headers=HX).content.decode()
    heading = re.search(r"<h3>(.*?)</h3>", html, re.DOTALL)
    assert heading is not None, html[:2000]
    return " ".join(re.sub(r"<[^>]+>", "", heading.group(1)).split())


@pytest.mark.django_db
def test_a_rollback_names_the_version_it_restores_whatever_its_warning_says(
    staff_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpu_inventory_rescan()
    monkeypatch.setattr(orchestration_selectors, "container_health", lambda: dict(RUNNING))
    first = _saved(StrategyName.VRAM_BASED)
    _saved(StrategyName.ISOLATION_FIRST)
    copy = gpu_config_restore(version=first, user=None)
    # The note is for people: reworded (or translated) it must not change what the page says.
    reworded = [
        {**w, "message": "Wiederhergestellt aus Version 1."} if w.get("code") == "restored" else w
        for w in copy.warnings
    ]
    ConfigVersion.objects.filter(pk=copy.pk).update(warnings=reworded)
    ApplyRun.objects.create(
        version=copy,
        kind=RunKind.ROLLBACK,
        status=RunStatus.SUCCEEDED,
        finished_at=timezone.now(),
    )
    client = Client()
    client.force_login(staff_user)

    heading = _run_heading(client)

    assert heading.startswith("Manual rollback to version 1 (saved again as version 3)"), heading
