"""A rollback's origin is stored: ``ConfigVersion.restored_from``.

It used to live only in the text of a "restored" warning ("Restored from version N") that a
selector parsed back. The field is filled here, once, from that text for the versions saved
before it existed; from now on ``gpu_config_restore`` sets it and nothing reads the text.
"""

from __future__ import annotations

from typing import Any

import django.db.models.deletion
from django.db import migrations, models


def _number_in(warnings: Any) -> int | None:
    """The version number the newest "restored" warning names (a copy of a copy also carries
    the older one's warning, before its own), or None."""
    number = None
    for warning in warnings if isinstance(warnings, list) else []:
        if isinstance(warning, dict) and warning.get("code") == "restored":
            digits = str(warning.get("message", "")).rpartition(" ")[2]
            number = int(digits) if digits.isascii() and digits.isdigit() else None
    return number


def forwards(apps: Any, schema_editor: Any) -> None:
    version_model = apps.get_model("gpuconfig", "ConfigVersion")
    pk_by_number = dict(version_model.objects.values_list("number", "pk"))
    for pk, warnings in version_model.objects.values_list("pk", "warnings"):
        number = _number_in(warnings)
        if number is not None and number in pk_by_number:
            version_model.objects.filter(pk=pk).update(restored_from_id=pk_by_number[number])


class Migration(migrations.Migration):
    dependencies = [("gpuconfig", "0002_configuration_field_names")]

    operations = [
        migrations.AddField(
            model_name="configversion",
            name="restored_from",
            field=models.ForeignKey(
                blank=True,
                help_text="The version this one is a copy of, when a rollback saved it.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="gpuconfig.configversion",
            ),
        ),
        # Backwards the column goes away with the field: nothing to undo here.
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
