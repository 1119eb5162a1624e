"""The Settings page in a real Chromium shows a real container's measured VRAM on its GPU card.

Real stand-in containers (podman), a faked NVML reporting the ai-clip container's host PID on
GPU 1, and the page polled by the browser. The screenshot is ``measured-vram.png``
(``GPUCONFIG_SCREENSHOT_DIR=docs/images`` refreshes the one in the docs).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

import pytest

from orchestration.tests.test_vram_containers import _host_pid, _service_container, running_project

if TYPE_CHECKING:
    from devices.tests.conftest import FakeNvml
    from orchestration.tests.containers import ComposeProject

__all__ = ["running_project"]  # a fixture, imported for its tests

pytestmark = [pytest.mark.browser, pytest.mark.containers, pytest.mark.django_db(transaction=True)]

MIB = 1024**2


def test_gpu_card_shows_measured_use_beside_the_estimate_and_outside_use(
    running_project: ComposeProject, fake_nvml: FakeNvml, new_page, staff_user, screenshot
) -> None:
    from playwright.sync_api import expect

    env = dict(running_project.env)
    a5500, a400 = fake_nvml.add_reference_box()
    a5500.reserved_mib = a400.reserved_mib = 250
    a5500.compute_processes = [
        (_host_pid(_service_container(running_project, "ai-llm"), env), 18_900 * MIB)
    ]
    a400.compute_processes = [
        (_host_pid(_service_container(running_project, "ai-clip"), env), 1_420 * MIB),
        (_host_pid(_service_container(running_project, "ai-enrichment"), env), 1_980 * MIB),
        (os.getpid(), 120 * MIB),
    ]

    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")

    card = page.locator("#gpu-1-memory")
    expect(card.locator('tr[data-service="ai-clip"]')).to_contain_text(
        re.compile(r"ai-clip\s*1\.4 GiB\s*~1\.2 GiB\s*Over estimate")
    )
    expect(card.locator('tr[data-service="ai-enrichment"]')).to_contain_text(
        re.compile(r"ai-enrichment\s*1\.9 GiB\s*~6\.6 GiB")
    )
    expect(card.locator("tr.outside")).to_contain_text("Outside GPU Config")
    expect(card.locator("tr.outside")).to_contain_text("120 MiB")
    expect(page.locator("#row-ai-clip td.measured")).to_contain_text("1.4 GiB on GPU 1")
    expect(page.locator("#gpu-0-memory")).to_contain_text("18.5 GiB")  # 18900 MiB
    assert page.js_errors == []
    screenshot(page, "measured-vram")
