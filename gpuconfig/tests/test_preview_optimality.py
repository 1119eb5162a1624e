"""The preview says how good a balanced plan is: "optimal", or how far from it (issue 9)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client

from devices.services import gpu_inventory_rescan

pytestmark = pytest.mark.django_db

PREVIEW = "/api/system/gpu-config/preview"
PAGE = "/settings/gpu/"
SERVICES = ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment")


@pytest.fixture(autouse=True)
def _inventory(db: Any) -> None:
    gpu_inventory_rescan()


def test_balanced_preview_reports_the_proven_optimum(member_api: Any) -> None:
    body = member_api.get(PREVIEW, {"strategy": "balanced"}).json()

    optimality = body["optimality"]
    assert optimality["proven"] is True
    assert optimality["label"] == "optimal"
    assert optimality["gap"] == 0.0
    assert optimality["lower_bound"] == optimality["max_utilization"]
    # The reference pair cannot hold all 31850 MiB: the zoo is what does not fit, and what
    # fits peaks at the LLM's 21700 MiB on the 24564 MiB A5500.
    assert optimality["max_utilization"] == pytest.approx(21700 / 24564, rel=1e-3)

    # The page's re-validation posts the form's state: the same answer.
    posted = member_api.post(
        PREVIEW, data=json.dumps({"strategy": "balanced"}), content_type="application/json"
    ).json()
    assert posted["optimality"] == optimality


def test_rule_strategies_make_no_optimality_claim(member_api: Any) -> None:
    body = member_api.get(PREVIEW, {"strategy": "vram_based"}).json()
    assert body["optimality"] is None


def test_the_page_shows_the_balanced_plans_optimality_in_the_preview(
    staff_user: Any,
) -> None:
    client = Client()
    client.force_login(staff_user)
    data = {"strategy": "balanced", "table_strategy": "balanced", "version": "0"}
    data |= {f"gpu-{name}": "" for name in SERVICES}
    data |= {"budget-ai-enrichment": "", "budget_auto-ai-enrichment": "", "action": "preview"}

    html = client.post(PAGE, data, headers={"HX-Request": "true"}).content.decode()

    shown = re.search(r'<span id="plan-optimality">(.*?)</span>', html)
    assert shown and shown.group(1) == "plan: optimal"

    data |= {"strategy": "vram_based", "table_strategy": "vram_based"}
    html = client.post(PAGE, data, headers={"HX-Request": "true"}).content.decode()
    assert 'id="plan-optimality"' not in html
