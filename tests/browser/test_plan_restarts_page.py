"""The preview names what restarts and compares with the re-plan from scratch, in a real
Chromium (issue 19): the box re-plans at once (htmx), and stays ticked across the swap."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from devices.services import gpu_inventory_rescan
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import gpu_config_save
from orchestration.services import forget_probe

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _inventory(transactional_db: Any) -> None:
    gpu_inventory_rescan()
    forget_probe()


def test_the_preview_names_the_restarts_and_the_box_re_plans_from_scratch(
    new_page, staff_user, screenshot
):
    gpu_config_save(user=staff_user, strategy=StrategyName.ISOLATION_FIRST)
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    page.locator("label[for=strategy-balanced]").click()
    expect(page.locator("#strategy-balanced")).to_be_checked()
    expect(page.locator("#unsaved-badge")).to_have_text("Unsaved changes")  # re-planned
    expect(page.locator("#from-scratch")).not_to_be_checked()

    page.get_by_role("button", name="Preview Changes").click()
    restarts = page.locator("#restarts-line")
    expect(restarts).to_contain_text("Restarts:")
    expect(restarts).to_contain_text("ai-yolo26")
    compare = page.locator("#plan-compare")
    expect(compare).to_contain_text("This plan")
    expect(compare).to_contain_text("Re-plan from scratch")
    expect(compare.locator("caption")).to_contain_text("instead of")
    kept = page.locator("#gpu-ai-enrichment option:checked").inner_text()
    screenshot(page, "settings-preview-restarts")

    # Ticking the box re-plans at once, and the preview then shows the full re-plan.
    with page.expect_response(lambda r: "validate" in r.url) as answered:
        page.get_by_label("Re-plan from scratch").check()
    assert "from_scratch=1" in (answered.value.request.post_data or "")
    expect(page.locator("#from-scratch")).to_be_checked()  # the re-planned form keeps it
    expect(page.locator("#gpu-ai-enrichment option:checked")).not_to_have_text(kept)
    page.get_by_role("button", name="Preview Changes").click()
    expect(page.locator("#plan-compare caption")).to_contain_text("Re-planned from scratch")
    expect(page.locator("#from-scratch")).to_be_checked()  # kept across the swap
    assert ConfigVersion.objects.count() == 1, "a preview saves nothing"
    assert page.js_errors == []


def test_a_version_from_the_history_is_loaded_into_the_form_and_previewed(new_page, staff_user):
    gpu_config_save(user=staff_user, strategy=StrategyName.VRAM_BASED)
    gpu_config_save(user=staff_user, strategy=StrategyName.ISOLATION_FIRST)
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")

    page.get_by_role("link", name="Compare with current (version 1)").click()
    expect(page.locator("#version-diff")).to_contain_text("Version 1 → current (version 2)")
    page.get_by_role("button", name="Load version 1 into the form").click()

    expect(page.locator("#gpu-form .notice.info")).to_contain_text(
        "Version 1's placement is in the form as Manual choices"
    )
    expect(page.locator("#strategy-manual")).to_be_checked()
    expect(page.locator("#diff")).to_contain_text("Changes from saved version 2")
    expect(page.locator("#restarts-line")).to_contain_text("Restarts:")
    assert ConfigVersion.objects.count() == 2, "loading saves nothing"
    assert page.js_errors == []
