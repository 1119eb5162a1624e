"""Restore any version from the history (issue 19): its placement goes into the form as
Manual choices, the preview says what restoring it moves, and Save or Apply restores it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from devices.services import gpu_inventory_rescan
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import gpu_config_save
from orchestration.services import forget_probe

pytestmark = pytest.mark.django_db

URL = "/settings/gpu/"
RESTORE = "/settings/gpu/restore/"
HX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def _inventory(db: Any) -> None:
    gpu_inventory_rescan()
    forget_probe()


def _placement(version: ConfigVersion) -> dict[str, int | None]:
    return {name: entry["gpu_index"] for name, entry in version.assignments.items()}


def _selected(html: str, service: str) -> str:
    select = re.search(rf'<select id="gpu-{service}".*?</select>', html, re.S)
    assert select, f"no dropdown for {service}"
    option = re.search(r'<option value="([^"]*)"[^>]*selected', select.group(0))
    assert option, f"nothing selected for {service}"
    return option.group(1)


def test_a_version_is_loaded_into_the_form_previewed_and_restored_by_save(staff):
    gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED)
    gpu_config_save(user=None, strategy=StrategyName.ISOLATION_FIRST)
    first, second = ConfigVersion.objects.order_by("number")
    assert _placement(first) != _placement(second), "the scenario: two placements"

    # The history's comparison offers it to staff.
    compare = staff.get(URL, {"compare": "1"}).content.decode()
    assert "Load version 1 into the form" in compare

    response = staff.post(RESTORE, {"version_to_restore": "1"}, headers=HX)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Version 1&#x27;s placement is in the form as Manual choices" in html
    assert re.search(r'value="manual" id="strategy-manual" checked', html)
    for service, gpu in _placement(first).items():
        assert _selected(html, service) == str(gpu), service
    diff = re.search(r'<section id="diff".*?</section>', html, re.S).group(0)
    assert "Changes from saved version 2" in diff
    moved = [s for s in _placement(first) if _placement(first)[s] != _placement(second)[s]]
    for service in moved:
        assert f"<strong>{service}</strong>: GPU {_placement(second)[service]} → GPU" in diff
    assert ConfigVersion.objects.count() == 2, "loading saves nothing"

    # Saving the form as loaded restores version 1's placement as version 3.
    data = {"strategy": "manual", "table_strategy": "manual", "version": "2", "action": "save"}
    data |= {f"gpu-{s}": str(g) for s, g in _placement(first).items()}
    data |= {"budget-ai-enrichment": "", "budget_auto-ai-enrichment": ""}
    assert staff.post(URL, data).status_code == 302
    restored = ConfigVersion.objects.get(number=3)
    assert _placement(restored) == _placement(first)


def test_only_staff_restore_and_an_unknown_version_is_refused(staff, member):
    gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED)

    assert "Load version" not in member.get(URL, {"compare": "1"}).content.decode()
    assert member.post(RESTORE, {"version_to_restore": "1"}, headers=HX).status_code == 403
    unknown = staff.post(RESTORE, {"version_to_restore": "9"}, headers=HX)
    assert unknown.status_code == 400
    assert "Choose a saved version to restore." in unknown.content.decode()
    assert staff.post(RESTORE, {"version_to_restore": "²"}, headers=HX).status_code == 400
    assert ConfigVersion.objects.count() == 1
