"""The one configuration type: its stored form, old stored versions, and the migration."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from gpuconfig.domain import Configuration, ResolvedAssignment

ZOO = ResolvedAssignment(
    "ai-enrichment",
    1,
    3.5,
    True,
    gpu_uuid="GPU-a400",
    gpu_name="NVIDIA RTX A400",
    pinned=True,
    vram_budget_override=None,
    budget_env="VRAM_BUDGET_GB",
)
# As versions were stored before the names were unified (no budget variable either).
OLD_ZOO = {
    "gpu": 1,
    "gpu_uuid": "GPU-a400",
    "gpu_name": "NVIDIA RTX A400",
    "vram_budget": 3.5,
    "budget_auto_adjusted": True,
    "pinned": True,
    "vram_budget_override": None,
    "enabled": True,
}


def test_a_configuration_reads_back_what_it_stores():
    configuration = Configuration((ZOO, ResolvedAssignment("ai-clip", None, enabled=False)))

    stored = configuration.to_json()

    assert stored["ai-enrichment"]["gpu_index"] == 1
    assert stored["ai-enrichment"]["vram_budget_gb"] == 3.5
    assert Configuration.from_json(stored) == configuration


def test_a_version_stored_under_the_old_names_reads_the_same():
    configuration = Configuration.from_json(
        {"ai-enrichment": OLD_ZOO}, budget_envs={"ai-enrichment": "VRAM_BUDGET_GB"}
    )

    assert configuration.get("ai-enrichment") == ZOO


def test_a_service_appears_once():
    with pytest.raises(ValueError, match="more than once"):
        Configuration((ZOO, ZOO))


@pytest.mark.django_db(transaction=True)
def test_the_migration_renames_the_stored_keys_and_back():
    executor = MigrationExecutor(connection)
    executor.migrate([("gpuconfig", "0001_initial")])
    old_apps = executor.loader.project_state([("gpuconfig", "0001_initial")]).apps
    version_model = old_apps.get_model("gpuconfig", "ConfigVersion")
    version_model.objects.create(
        number=1, strategy="manual", assignments={"ai-enrichment": OLD_ZOO}
    )

    executor = MigrationExecutor(connection)
    executor.migrate([("gpuconfig", "0002_configuration_field_names")])
    new_apps = executor.loader.project_state([("gpuconfig", "0002_configuration_field_names")]).apps
    stored = new_apps.get_model("gpuconfig", "ConfigVersion").objects.get(number=1).assignments
    assert stored["ai-enrichment"]["gpu_index"] == 1
    assert stored["ai-enrichment"]["vram_budget_gb"] == 3.5
    assert "gpu" not in stored["ai-enrichment"] and "vram_budget" not in stored["ai-enrichment"]

    executor = MigrationExecutor(connection)
    executor.migrate([("gpuconfig", "0001_initial")])
    assert version_model.objects.get(number=1).assignments == {"ai-enrichment": OLD_ZOO}
    MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())
