"""Digits that str.isdigit() accepts and int() refuses, typed on the Settings > GPU page
(issue 12): a clear message, and nothing saved. The same input to the API:
gpuconfig/tests/test_config_api_inputs.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from devices.services import gpu_inventory_rescan
from gpuconfig.models import ConfigVersion, GpuConfiguration
from orchestration import selectors as orchestration_selectors
from orchestration import services as orchestration_services
from pages import views

pytestmark = pytest.mark.django_db

# The container status these page tests do not look at (podman is not theirs to read).
NO_CONTAINERS = {
    "available": False,
    "unavailable_reason": "not read in this test",
    "containers": {},
    "drifted": [],
    "summary": "",
}


@pytest.fixture(autouse=True)
def _inventory(db: Any) -> None:
    gpu_inventory_rescan()


def _nothing_saved() -> bool:
    return (
        not ConfigVersion.objects.exists()
        and not GpuConfiguration.objects.exists()
        and not (Path(django_settings.GPUCONFIG_OUTPUT_DIR) / "gpu-assignments.yml").exists()
    )


def test_the_history_compare_with_a_superscript_digit_says_there_is_no_such_version(
    staff_user, monkeypatch
):
    monkeypatch.setattr(orchestration_selectors, "container_health", lambda: NO_CONTAINERS)
    orchestration_services.forget_probe()
    client = Client()
    client.force_login(staff_user)

    response = client.get("/settings/gpu/?compare=²")

    assert response.status_code == 200
    assert "There is no version ²." in response.content.decode()


def test_a_settings_form_post_with_a_superscript_digit_is_refused_beside_its_service(
    staff_user, monkeypatch
):
    monkeypatch.setattr(orchestration_selectors, "container_health", lambda: NO_CONTAINERS)
    orchestration_services.forget_probe()
    client = Client()
    client.force_login(staff_user)

    response = client.post(
        "/settings/gpu/",
        {"strategy": "manual", "gpu-ai-llm": "²", "action": "save"},
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 400
    assert "GPU: &#x27;²&#x27; is not a GPU; choose one from the list." in response.content.decode()
    assert _nothing_saved()
    assert views  # the module under test
