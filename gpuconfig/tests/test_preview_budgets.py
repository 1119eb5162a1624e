"""The preview on the reference pair when only an adjusted budget makes a plan fit (issue 9,
issue 11 item 4): no automatic strategy answers over capacity while a plan exists where the
zoo fits at its minimum (``gpuconfig.vram_min_mb`` in docker-compose.prod.yml), and below
that minimum the zoo is said not to fit instead of being given a budget it cannot use."""

from __future__ import annotations

from typing import Any

import pytest

from devices.services import gpu_inventory_rescan

pytestmark = pytest.mark.django_db

PREVIEW = "/api/system/gpu-config/preview"
# GPU 0 is the A5500 (24564 MB), GPU 1 the A400 (4094 MB).
CAPACITY_MB = {"0": 24564, "1": 4094}


@pytest.fixture(autouse=True)
def _inventory(db: Any) -> None:
    gpu_inventory_rescan()


def _preview(client: Any, strategy: str) -> dict[str, Any]:
    response = client.get(PREVIEW, {"strategy": strategy})
    assert response.status_code == 200, response.json()
    body: dict[str, Any] = response.json()
    return body


def _placed(body: dict[str, Any]) -> dict[str, int]:
    return {a["service"]: a["gpu_index"] for a in body["assignments"]}


def _zoo(body: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in body["assignments"] if a["service"] == "ai-enrichment")


def test_vram_based_fits_the_reference_pair_with_the_zoos_budget_adjusted(member_api):
    body = _preview(member_api, "vram_based")

    # It used to answer GPU 0 at 25.1 of 24 GB and "ai-yolo26 could not be placed".
    assert not any("could not be placed" in w for w in body["warnings"])
    assert not any(w["code"] == "combined_exceeds_gpu" for w in body["warning_details"])
    for index, planned in body["planned_vram_mb"].items():
        assert planned <= CAPACITY_MB[index]
    assert body["planned_vram_mb"] == {"0": 24400, "1": 650 + 2868}
    # The rule's order where it fits (LLM, Florence and CLIP on the A5500); YOLO, which no
    # longer fits there, joins the zoo, whose budget shrinks to the whole tenths of a GiB in
    # 4094 - 650 - 512 = 2932 MiB: 2.8 GiB, 2868 MiB.
    assert _placed(body) == {
        "ai-llm": 0,
        "ai-yolo26": 1,
        "ai-florence": 0,
        "ai-clip": 0,
        "ai-enrichment": 1,
    }
    zoo = _zoo(body)
    assert (zoo["vram_budget"], zoo["auto_adjusted"]) == (2.8, True)
    assert body["warnings"] == [
        "ai-enrichment VRAM budget (6.6 GiB) exceeds GPU 1 (4.0 GiB). Auto-adjusted to 2.8 GiB."
    ]


@pytest.mark.parametrize("strategy", ["vram_based", "latency_optimized", "balanced"])
def test_automatic_strategies_that_can_fit_answer_within_capacity(member_api, strategy):
    body = _preview(member_api, strategy)
    codes = {w["code"] for w in body["warning_details"]}
    assert codes == {"budget_adjusted"}, body["warnings"]
    assert all(planned <= CAPACITY_MB[i] for i, planned in body["planned_vram_mb"].items())
    assert _zoo(body)["vram_budget"] >= 2.0, "never below the zoo's minimum"


def test_isolation_first_says_the_zoo_will_not_fit_instead_of_a_0_2_gb_budget(member_api):
    body = _preview(member_api, "isolation_first")

    # The rule keeps the four others on the A400, which leaves the zoo 232 MiB: it used to
    # say "Auto-adjusted to 0.2 GB". Now it is planned at its 2.0 GiB minimum, and flagged.
    assert not any("Auto-adjusted" in w for w in body["warnings"])
    zoo = _zoo(body)
    assert (zoo["gpu_index"], zoo["vram_budget"]) == (1, 2.0)
    detail = next(w for w in body["warning_details"] if w["code"] == "budget_below_minimum")
    assert (detail["service"], detail["gpu_index"]) == ("ai-enrichment", 1)
    assert detail["message"] == (
        "ai-enrichment will not fit on GPU 1 (4.0 GiB): it needs a VRAM budget of at least "
        "2.0 GiB (its minimum), but only 232 MiB is left after the other services and the "
        "512 MiB reserve."
    )
    # It counts as over capacity: the A400 is over, and the zoo is named as not placed.
    assert body["planned_vram_mb"]["1"] == 650 + 1500 + 1200 + 2048  # 2.0 GiB
    assert any(
        w["code"] == "not_placed_within_capacity" and w["service"] == "ai-enrichment"
        for w in body["warning_details"]
    )
