"""The preview says how Apply will move each service, as the run will decide it (issue 19):
"moves without a gap" where a second copy fits, "restarts, ..." with the reason otherwise.
Real podman containers, as in test_handover_containers."""

from __future__ import annotations

import re
from typing import Any

import pytest

from orchestration.tests import test_handover_containers as handover_tests
from orchestration.tests.test_handover_containers import (
    DESIGN,
    HEALTHY_ON_ANY_GPU,
    _apply,
    _detector_project,
)

broker_url = handover_tests.broker_url
stand = handover_tests.stand
worker = handover_tests.worker

pytestmark = [pytest.mark.containers, pytest.mark.django_db(transaction=True)]


def _preview_how(staff: Any, placement: dict[str, int], version: int) -> str:
    data = {"strategy": "manual", "table_strategy": "manual", "version": str(version)}
    data |= {f"gpu-{name}": str(gpu) for name, gpu in placement.items()}
    data |= {"budget-ai-enrichment": "", "budget_auto-ai-enrichment": "", "action": "preview"}
    html = staff.post("/settings/gpu/", data, headers={"HX-Request": "true"}).content.decode()
    found = re.search(r'<ul id="restart-how">.*?</ul>', html, re.S)
    assert found, "the preview does not say how the services move"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(0))).strip()


def test_the_preview_says_which_move_hands_over_and_which_restarts(
    stand, worker, staff_api, staff, standin_image
):
    _detector_project(stand, standin_image, HEALTHY_ON_ANY_GPU)
    applied = _apply(staff_api, worker, DESIGN)
    assert applied["run"]["status"] == "succeeded"
    version = applied["run"]["version"]

    # Room on GPU 1 for a second detector: it hands over.
    how = _preview_how(staff, {**DESIGN, "ai-yolo26": 1}, version)
    assert "ai-yolo26 moves without a gap: a second copy starts on GPU 1" in how, how

    # With the zoo on the A400 too, there is no room for a second copy there: it restarts.
    crowded = {"ai-yolo26": 1, "ai-clip": 1, "ai-enrichment": 1}
    how = _preview_how(staff, crowded, version)
    assert "ai-yolo26 restarts, its target GPU has no room for a second copy" in how, how
