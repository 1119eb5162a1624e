"""GPU maintenance in a real Chromium (issue 21): staff put GPU 1 in maintenance from its card,
the card says so and the plan on screen keeps new services off it; drain and end it."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from devices.gpu_health import reset_health_state
from devices.models import GpuDevice
from devices.services import gpu_inventory_rescan, reset_sampler
from gpuconfig.domain import StrategyName
from gpuconfig.services import gpu_config_save
from orchestration.services import forget_probe

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _inventory(transactional_db: Any) -> None:
    reset_health_state()
    reset_sampler()
    gpu_inventory_rescan()
    forget_probe()


def test_staff_cordon_a_gpu_from_its_card_and_the_plan_keeps_off_it(
    new_page: Any, staff_user: Any, screenshot: Any
) -> None:
    gpu_config_save(user=staff_user, strategy=StrategyName.VRAM_BASED)
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    card = page.locator('li.gpu[data-gpu-index="1"]')

    card.get_by_label("Maintenance reason").fill("Fan replacement")
    card.get_by_role("button", name="Put in maintenance").click()

    expect(page.locator("body")).to_contain_text(
        "GPU 1 is in maintenance: it takes no new services."
    )
    card = page.locator('li.gpu[data-gpu-index="1"]')
    expect(card).to_contain_text("In maintenance")
    expect(card).to_contain_text("set by operator: Fan replacement")
    expect(card).to_contain_text("Free for new services: none (in maintenance)")
    screenshot(page, "gpu-in-maintenance")
    row = GpuDevice.objects.get(gpu_index=1)
    assert (row.maintenance, row.maintenance_reason, row.maintenance_by) == (
        True,
        "Fan replacement",
        "operator",
    )

    card.get_by_role("button", name="Drain").click()
    expect(page.locator("body")).to_contain_text("GPU 1 is being drained")
    page.locator('li.gpu[data-gpu-index="1"]').get_by_role("button", name="End maintenance").click()
    expect(page.locator("body")).to_contain_text(
        "GPU 1 is out of maintenance: plans may use it again."
    )
    expect(page.locator('li.gpu[data-gpu-index="1"]')).to_contain_text("Put in maintenance")
    assert page.js_errors == []


def test_read_only_users_see_the_state_but_no_buttons(
    new_page: Any, member_user: Any, staff_user: Any
) -> None:
    from devices.maintenance import gpu_maintenance_start

    gpu_maintenance_start(gpu_index=0, reason="Driver upgrade", by="operator")
    page = new_page(user=member_user)
    page.goto("/settings/gpu/")
    card = page.locator('li.gpu[data-gpu-index="0"]')

    expect(card).to_contain_text("set by operator: Driver upgrade")
    expect(card.get_by_role("button", name="End maintenance")).to_have_count(0)
    expect(page.get_by_role("button", name="Put in maintenance")).to_have_count(0)
