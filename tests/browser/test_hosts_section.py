"""Settings > GPU Configuration's Hosts section in a real Chromium (issue 20): staff add a
host and see the command that starts its agent, with its one-time join token, once; then
revoke it after the browser's confirmation naming it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from devices.hosts import host_join
from devices.models import Host, HostStatus
from devices.services import gpu_inventory_rescan
from orchestration.services import forget_probe

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _inventory(transactional_db: Any) -> None:
    gpu_inventory_rescan()
    forget_probe()


def test_staff_add_a_host_see_its_agent_command_once_and_revoke_it(
    new_page: Any, staff_user: Any, screenshot: Any
) -> None:
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    hosts = page.locator("#hosts")
    expect(hosts.locator('tr[data-host="local"]')).to_contain_text("Online")

    hosts.get_by_label("New host name").fill("gpu-box-2")
    hosts.get_by_role("button", name="Add host").click()

    command = page.locator("#agent-command")
    expect(command).to_contain_text("GPUCONFIG_HOST_NAME=gpu-box-2")
    expect(page.locator("#join-command")).to_contain_text("This token will not be shown again")
    expect(page.locator('tr[data-host="gpu-box-2"]')).to_contain_text("Joining")
    text = command.inner_text()
    assert f"GPUCONFIG_URL={page.url.split('/settings/')[0]}/" in text
    token = re.search(r"GPUCONFIG_JOIN_TOKEN=(gcj_\S+)", text)
    assert token, text
    screenshot(page, "hosts-agent-command")
    # The command's token is the one stored: the agent joins with it.
    host, _credential = host_join(token.group(1), agent_version="1.0")
    assert host.name == "gpu-box-2"

    questions: list[str] = []

    def accept(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("link", name="Refresh hosts").click()
    expect(page.locator("#agent-command")).to_have_count(0)  # shown once
    row = page.locator('tr[data-host="gpu-box-2"]')
    expect(row).to_contain_text("Online")
    row.get_by_role("button", name="Revoke").click()

    expect(page.locator('tr[data-host="gpu-box-2"]')).to_contain_text("Revoked since")
    assert questions and questions[0].startswith("Revoke host gpu-box-2?")
    assert Host.objects.get(name="gpu-box-2").status == HostStatus.REVOKED
    assert page.js_errors == []
