"""The page names what a change restarts, and sets the plan beside the re-plan from scratch
(issue 19): the preview, the "Re-plan from scratch" choice, and Apply's confirmation."""

from __future__ import annotations

import re
from typing import Any

import pytest

from devices.services import gpu_inventory_rescan
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import gpu_config_save
from orchestration import selectors as orchestration_selectors
from orchestration import services as orchestration_services

pytestmark = pytest.mark.django_db

URL = "/settings/gpu/"
HX = {"HX-Request": "true"}
SERVICES = ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment")


@pytest.fixture(autouse=True)
def _inventory(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_inventory_rescan()
    # The container status reads podman; these tests check the page's wording of a plan.
    monkeypatch.setattr(
        orchestration_selectors,
        "container_health",
        lambda: {
            "available": True,
            "unavailable_reason": "",
            "containers": {},
            "drifted": [],
            "summary": "",
        },
    )
    orchestration_services.forget_probe()


def _form(strategy: str, table: str, version: str, **fields: str) -> dict[str, str]:
    data = {"strategy": strategy, "table_strategy": table, "version": version}
    for name in SERVICES:
        data[f"gpu-{name}"] = ""
    data["budget-ai-enrichment"] = ""
    data["budget_auto-ai-enrichment"] = ""
    data.update(fields)
    return data


def _region(html: str, id_: str) -> str:
    found = re.search(rf'<(\w+)[^>]* id="{id_}".*?</\1>', html, re.S)
    assert found, f"no #{id_} on the page"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(0))).strip()


def _preview(staff: Any, **extra: str) -> str:
    data = _form("balanced", table="isolation_first", version="1", **extra)
    response = staff.post(URL, {**data, "action": "preview"}, headers=HX)
    assert response.status_code == 200
    return response.content.decode()


def _api_preview(staff_api: Any, from_scratch: bool = False) -> dict[str, Any]:
    """The same plan through the API: the page must say what it returns."""
    response = staff_api.post(
        "/api/system/gpu-config/preview",
        {"strategy": "balanced", "from_scratch": from_scratch},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def _moved_count(html: str) -> int:
    return len(re.findall(r"<li><strong>[^<]+</strong> moves", html))


def test_the_preview_names_each_restart_and_compares_with_the_re_plan_from_scratch(
    staff, staff_api
):
    # Isolation-first in force; Balanced keeps running services where its goal allows.
    gpu_config_save(user=None, strategy=StrategyName.ISOLATION_FIRST)
    planned = _api_preview(staff_api)
    assert planned["restarts"], "the scenario restarts something"

    html = _preview(staff)

    assert _region(html, "restarts-line") == "Restarts: " + ", ".join(planned["restarts"])
    for name in {"ai-llm", "ai-enrichment", "ai-clip", "ai-yolo26", "ai-florence"} - set(
        planned["restarts"]
    ):
        assert name not in _region(html, "restarts-line")
    # Each running service that moves is named with why.
    moved = planned["disruption"]["moved"]
    assert _moved_count(html) == len(moved)
    for item in moved:
        assert f"{item['service']} moves: {item['reason']}" in _region(html, "moved-why")
    # This plan beside the re-plan from scratch: moves and the fullest GPU, as the API says.
    compare = _region(html, "plan-compare")
    scratch_moves = len(planned["disruption"]["scratch_moved"])
    assert compare.startswith(planned["disruption"]["label"].capitalize()), compare
    assert f"Running services moved {len(moved)} {scratch_moves}" in compare, compare
    utilization = planned["disruption"]["max_utilization"] * 100
    assert f"Fullest GPU (planned VRAM of capacity) {utilization:.1f} %" in compare, compare
    assert ConfigVersion.objects.count() == 1  # a preview saves nothing


def test_re_plan_from_scratch_is_previewed_saved_and_applied_as_shown(staff, staff_api):
    gpu_config_save(user=None, strategy=StrategyName.ISOLATION_FIRST)
    kept_plan = _api_preview(staff_api)
    scratch_plan = _api_preview(staff_api, from_scratch=True)
    # The scenario: keeping services in place gives another plan than starting over.
    gpus = lambda body: {a["service"]: a["gpu_index"] for a in body["assignments"]}  # noqa: E731
    assert gpus(kept_plan) != gpus(scratch_plan)

    kept = _preview(staff)
    scratch = _preview(staff, from_scratch="1")

    assert 'id="from-scratch" checked' in scratch and 'id="from-scratch" checked' not in kept
    assert _region(scratch, "plan-compare").startswith("Re-planned from scratch:")
    assert _region(scratch, "restarts-line") == "Restarts: " + ", ".join(scratch_plan["restarts"])

    # Saving with the box ticked stores the plan the preview showed, not the kept one.
    data = _form("balanced", table="balanced", version="1", from_scratch="1")
    assert staff.post(URL, {**data, "action": "save"}).status_code == 302
    saved = ConfigVersion.objects.order_by("-number").first()
    assert {n: a["gpu_index"] for n, a in saved.assignments.items()} == gpus(scratch_plan)


def test_without_javascript_apply_asks_and_names_what_restarts(staff, staff_api, monkeypatch):
    gpu_config_save(user=None, strategy=StrategyName.ISOLATION_FIRST)
    monkeypatch.setattr(orchestration_selectors, "apply_readiness", lambda: (True, ""))
    planned = _api_preview(staff_api)

    data = _form("balanced", table="isolation_first", version="1")
    html = staff.post(URL, {**data, "action": "apply"}).content.decode()

    asked = _region(html, "apply-confirm-restarts")
    assert asked == "Restarts: " + ", ".join(planned["restarts"]) + ".", asked
    assert "ai-llm" not in asked
    assert ConfigVersion.objects.count() == 1  # nothing saved before the answer
