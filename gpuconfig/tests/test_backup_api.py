"""The backup API: GET /api/system/gpu-config/export, POST /api/system/gpu-config/import."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient
from ruamel.yaml import YAML

from devices.services import gpu_inventory_rescan
from gpuconfig.backup import FORMAT
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion, GpuConfiguration
from gpuconfig.services import AssignmentChange, gpu_config_save

pytestmark = pytest.mark.django_db

EXPORT = "/api/system/gpu-config/export"
IMPORT = "/api/system/gpu-config/import"


@pytest.fixture(autouse=True)
def _saved(db: Any) -> None:
    gpu_inventory_rescan()
    gpu_config_save(
        user=None,
        strategy=StrategyName.VRAM_BASED,
        changes=(AssignmentChange("ai-llm", gpu_index=0),),
    )


def test_export_as_yaml_and_json(staff_api: APIClient):
    response = staff_api.get(EXPORT)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/yaml; charset=utf-8"
    assert YAML(typ="safe").load(response.content)["format"] == FORMAT
    as_yaml = staff_api.get(EXPORT, {"format": "yaml"})
    assert as_yaml["Content-Type"] == "application/yaml; charset=utf-8"
    assert YAML(typ="safe").load(as_yaml.content)["configuration_version"] == 1
    doc = json.loads(staff_api.get(EXPORT, {"format": "json", "versions": "1"}).content)
    assert doc["configuration_version"] == 1
    assert [v["number"] for v in doc["versions"]] == [1]
    bad = staff_api.get(EXPORT, {"format": "xml"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "Invalid request: format: 'xml' is not one of: yaml, json"


def test_import_dry_run_then_for_real(staff_api: APIClient):
    body = staff_api.get(EXPORT, {"format": "json"}).content
    gpu_config_save(user=None, strategy=StrategyName.BALANCED)

    dry = staff_api.post(f"{IMPORT}?dry_run=1", body, content_type="application/json")

    assert dry.status_code == 200
    assert dry.json()["dry_run"] is True
    assert dry.json()["version"] is None
    assert "strategy: balanced → vram_based" in dry.json()["changes"]
    assert ConfigVersion.objects.count() == 2

    done = staff_api.post(f"{IMPORT}?version=2", body, content_type="application/json")

    assert done.status_code == 200
    assert done.json()["version"] == 3
    assert ConfigVersion.objects.get(number=3).strategy == "vram_based"
    assert GpuConfiguration.objects.get(service_name="ai-llm").gpu_index == 0


def test_import_of_yaml_with_a_stale_version_is_a_conflict(staff_api: APIClient):
    body = staff_api.get(EXPORT).content
    response = staff_api.post(f"{IMPORT}?version=0", body, content_type="application/yaml")
    assert response.status_code == 409
    assert ConfigVersion.objects.count() == 1


def test_a_bad_document_is_400_with_the_field_and_nothing_saved(staff_api: APIClient):
    doc = json.loads(staff_api.get(EXPORT, {"format": "json"}).content)
    doc["assignments"][0]["vram_budget_override"] = -1
    response = staff_api.post(IMPORT, json.dumps(doc), content_type="application/json")
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert body["error"].startswith("Invalid request: assignments[0].vram_budget_override: ")
    assert list(body["errors"]) == ["assignments[0].vram_budget_override"]
    syntax = staff_api.post(IMPORT, b"{", content_type="application/json")
    assert syntax.status_code == 400
    assert syntax.json()["errors"]["file"][0].startswith("not valid JSON")
    assert ConfigVersion.objects.count() == 1


def test_viewers_and_anonymous_callers_get_403(member_api: APIClient, anon_api: APIClient):
    for client in (member_api, anon_api):
        assert client.get(EXPORT).status_code == 403
        response = client.post(IMPORT, b"{}", content_type="application/json")
        assert response.status_code == 403
    assert (
        member_api.get(EXPORT).json()["error"] == "Only staff users may export or import backups."
    )
    assert ConfigVersion.objects.count() == 1
