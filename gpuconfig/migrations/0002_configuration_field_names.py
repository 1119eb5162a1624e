"""Stored configurations use the field names of the one configuration type.

``ConfigVersion.assignments`` entries said ``gpu`` and ``vram_budget`` where the type (and the
API) say ``gpu_index`` and ``vram_budget_gb``. Only the keys change; values stay as stored.
``ResolvedAssignment.from_json`` still reads the old keys, for backups made before this.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

RENAMES = {"gpu": "gpu_index", "vram_budget": "vram_budget_gb"}


def _renamed(entry: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    return {renames.get(key, key): value for key, value in entry.items()}


def _rewrite(apps: Any, renames: dict[str, str]) -> None:
    version_model = apps.get_model("gpuconfig", "ConfigVersion")
    for version in version_model.objects.all().only("pk", "assignments"):
        assignments = {
            service: _renamed(entry, renames) if isinstance(entry, dict) else entry
            for service, entry in (version.assignments or {}).items()
        }
        if assignments != version.assignments:
            version_model.objects.filter(pk=version.pk).update(assignments=assignments)


def forwards(apps: Any, schema_editor: Any) -> None:
    _rewrite(apps, RENAMES)


def backwards(apps: Any, schema_editor: Any) -> None:
    _rewrite(apps, {new: old for old, new in RENAMES.items()})


class Migration(migrations.Migration):
    dependencies = [("gpuconfig", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards)]
