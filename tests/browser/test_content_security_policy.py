"""Under the Content-Security-Policy (issue 12), every page still works in a real Chromium and
the browser reports no violation: the Settings pages (htmx), the admin, Swagger UI and the
browsable API."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from devices.services import gpu_inventory_rescan
from orchestration.services import forget_probe

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _inventory(transactional_db: Any) -> None:
    gpu_inventory_rescan()
    forget_probe()


def _watch_csp(page: Any) -> list[str]:
    """Collect the console's CSP violation reports for ``page``."""
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return violations


def test_the_settings_page_works_under_the_policy(new_page, staff_user):
    page = new_page(user=staff_user)
    violations = _watch_csp(page)

    page.goto("/settings/gpu/")
    expect(page.get_by_role("heading", name="GPU 0: NVIDIA RTX A5500")).to_be_visible()
    # The cards still poll (their trigger has no filter expression for htmx to evaluate).
    with page.expect_request(lambda r: "part=gpu-cards" in r.url, timeout=10_000):
        pass
    # htmx runs (its script carries the nonce): choosing a strategy re-plans in place.
    page.get_by_label(re.compile("Isolation-first")).check()
    expect(page.locator("#gpu-form")).to_contain_text("Isolation-first")
    page.goto("/settings/system/")
    expect(page.get_by_role("heading", name="System settings")).to_be_visible()

    assert violations == [], violations
    assert page.js_errors == []


def test_the_admin_swagger_ui_and_browsable_api_work_under_the_policy(new_page, admin_user):
    page = new_page(user=admin_user)
    violations = _watch_csp(page)

    page.goto("/admin/gpuconfig/gpuconfiguration/")
    expect(page.get_by_text("Read-only here: change assignments on")).to_be_visible()
    page.goto("/api/docs")
    # Swagger UI renders the operations only if its bundle and start-up script both ran.
    expect(page.get_by_text("/api/system/gpu-config/preview").first).to_be_visible()
    page.goto("/api/system/gpu-config")
    expect(page.get_by_text('"strategies"').first).to_be_visible()

    assert violations == [], violations
    assert page.js_errors == []
