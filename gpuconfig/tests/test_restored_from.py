"""A rollback's origin is stored (``ConfigVersion.restored_from``), not parsed from a warning.

Issue 18: the version a rollback copies lived only in the text "Restored from version N"
that a selector parsed back; a reworded or translated text lost it, and a copy of a copy
(which carries the older copy's warning first) named the wrong version. What the page says of
such a rollback: pages/tests/test_rollback_heading.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from gpuconfig import selectors
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import gpu_config_restore, gpu_config_save


def _saved(strategy: StrategyName) -> ConfigVersion:
    return gpu_config_save(user=None, strategy=strategy).version


@pytest.mark.django_db
def test_a_copy_of_a_copy_names_the_version_it_copies() -> None:
    first = _saved(StrategyName.VRAM_BASED)
    _saved(StrategyName.BALANCED)
    copy = gpu_config_restore(version=first, user=None)  # 3, a copy of 1
    _saved(StrategyName.ISOLATION_FIRST)
    again = gpu_config_restore(version=copy, user=None)  # 5, a copy of 3

    assert selectors.restored_from(again.number) == copy.number == 3
    assert selectors.restored_from(copy.number) == first.number == 1
    assert selectors.restored_from(first.number) is None
    # The note for people says the same, once.
    notes = [w["message"] for w in again.warnings if w.get("code") == "restored"]
    assert notes == ["Restored from version 3"]


def _restored(number: int) -> dict[str, Any]:
    return {
        "code": "restored",
        "message": f"Restored from version {number}",
        "service": None,
        "gpu_index": None,
    }


@pytest.mark.django_db(transaction=True)
def test_the_migration_fills_restored_from_from_the_old_warning_text() -> None:
    before, after = (
        ("gpuconfig", "0002_configuration_field_names"),
        (
            "gpuconfig",
            "0003_version_restored_from",
        ),
    )
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    old_model = executor.loader.project_state([before]).apps.get_model("gpuconfig", "ConfigVersion")
    for number, warnings in (
        (1, []),
        (2, []),
        (3, [_restored(1)]),
        # A copy of a copy made before this: the older copy's note first, then its own.
        (4, [_restored(1), _restored(3)]),
        (5, [{"code": "restored", "message": "Restored from version 99"}]),  # no such version
    ):
        old_model.objects.create(
            number=number, strategy="vram_based", assignments={}, warnings=warnings
        )

    executor = MigrationExecutor(connection)
    executor.migrate([after])
    new_model = executor.loader.project_state([after]).apps.get_model("gpuconfig", "ConfigVersion")
    origins = dict(new_model.objects.values_list("number", "restored_from__number"))
    assert origins == {1: None, 2: None, 3: 1, 4: 3, 5: None}
    MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())
