"""Backup files built to break the import (issue 17), through the API, Settings > System and
``manage.py import_gpu_config``: each is refused with a sentence that says why (a 400, or the
command's one line), the answer stays short, and nothing changes: no version, no settings, the
same ``gpu-assignments.yml``.
"""

from __future__ import annotations

import html
import json
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from devices.services import gpu_inventory_rescan
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion, GpuConfiguration, SystemSetting
from gpuconfig.services import ASSIGNMENTS_FILE, AssignmentChange, gpu_config_save

pytestmark = pytest.mark.django_db

EXPORT = "/api/system/gpu-config/export"
IMPORT = "/api/system/gpu-config/import"
PAGE_IMPORT = "/settings/system/backup/import/"
HX = {"HX-Request": "true"}
# Every refusal here is a sentence or two; the alias bomb's used to be 624 MB.
MAX_ANSWER_BYTES = 4000


@pytest.fixture(autouse=True)
def _saved(db: Any) -> None:
    gpu_inventory_rescan()
    gpu_config_save(
        user=None,
        strategy=StrategyName.VRAM_BASED,
        changes=(AssignmentChange("ai-llm", gpu_index=0),),
    )


def _assignments_file() -> Path:
    return Path(django_settings.GPUCONFIG_OUTPUT_DIR) / ASSIGNMENTS_FILE


def _snapshot() -> dict[str, Any]:
    """What a refused import must leave as it was."""
    return {
        "versions": ConfigVersion.objects.count(),
        "rows": sorted(
            GpuConfiguration.objects.values_list("service_name", "gpu_index", "enabled")
        ),
        "settings": dict(SystemSetting.objects.values_list("key", "value")),
        "file": _assignments_file().read_bytes(),
    }


def _good_json(api: APIClient) -> dict[str, Any]:
    return json.loads(api.get(EXPORT, {"format": "json"}).content)


HEADER = (
    "format: gpuconfig-backup\nschema_version: 1\ngenerated_at: '2026-12-01T00:00:00Z'\n"
    "gpus: []\nassignments: []\nsystem_settings: {}\n"
)


def _laughs(depth: int) -> str:
    """A billion laughs: 9**(depth+1) values once expanded, from a few hundred bytes. The
    issue's file had depth 8 (693 bytes, 624 MB answered); 6 (4.8 million values) is over the
    bound as surely and keeps a run of these tests without the fix survivable."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, depth + 1):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return (
        HEADER
        + "versions:\n"
        + "".join(f"  - {line}\n" for line in lines)
        + (f"strategy: *a{depth}\n")
    )


def _service_with_a_lone_surrogate(doc: dict[str, Any]) -> str:
    doc["assignments"][0]["service"] = "ai-clip\ud800"
    return json.dumps(doc)  # ASCII: the surrogate travels as the escape \ud800


# (id, the file, the sentence the user reads). ``None``: built from the exported document.
BAD_FILES: list[tuple[str, str | None, str]] = [
    (
        "yaml alias bomb",
        _laughs(6),
        "its YAML aliases expand to more than 100,000 values or 2,097,152 characters "
        "(are aliases nested inside aliases?); this is not a GPU Config backup",
    ),
    (
        "yaml nested 1000 deep",
        # One bracket a line: as deep as the file, without ruamel's slow scan of a
        # thousand brackets on one line.
        HEADER + "strategy: " + "[\n" * 1000 + "]" * 1000 + "\n",
        "not valid YAML: nested too deeply to be a GPU Config backup",
    ),
    (
        "json nested 100000 deep",
        '{"format": "gpuconfig-backup", "strategy": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "not valid JSON: nested too deeply to be a GPU Config backup",
    ),
    (
        "yaml nested 65 deep",
        HEADER + "strategy: " + "[" * 65 + "]" * 65 + "\n",
        "nested deeper than 64 levels; this is not a GPU Config backup",
    ),
    (
        "yaml list as a key",
        HEADER + "strategy: vram_based\n? [[a]]\n: 1\n",
        "not valid YAML: a list or mapping is used as a key",
    ),
    (
        "yaml 5000-digit number",
        HEADER + "strategy: vram_based\nconfiguration_version: " + "7" * 5000 + "\n",
        "not valid YAML: a number has more than 4,300 digits",
    ),
    (
        "json 5000-digit number",
        '{"format": "gpuconfig-backup", "configuration_version": ' + "7" * 5000 + "}",
        "not valid JSON: a number has more than 4,300 digits",
    ),
    (
        "yaml hex number past the digit limit",
        HEADER + "strategy: vram_based\nconfiguration_version: 0x" + "f" * 5000 + "\n",
        "configuration_version: a number too large for any field (over 2**63)",
    ),
    (
        "yaml lone surrogate in a service name",
        HEADER.replace("assignments: []\n", "")
        + 'strategy: vram_based\nassignments:\n  - service: "ai-clip\\ud800"\n',
        "assignments[0].service: text that is not valid Unicode (a lone surrogate such as \\ud800)",
    ),
    (
        "json lone surrogate in a service name",
        None,
        "assignments[0].service: text that is not valid Unicode (a lone surrogate such as \\ud800)",
    ),
    (
        "long value quoted as an excerpt",
        HEADER + "strategy: " + "x" * 100_000 + "\n",
        "strategy: unknown strategy 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxx'; one of: ",
    ),
]
IDS = [name for name, _, _ in BAD_FILES]


def _body(text: str | None, api: APIClient) -> str:
    return text if text is not None else _service_with_a_lone_surrogate(_good_json(api))


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in BAD_FILES], ids=IDS)
def test_the_api_refuses_the_file_with_a_short_400_and_changes_nothing(
    staff_api: APIClient, text: str | None, message: str
):
    body = _body(text, staff_api)
    before = _snapshot()

    response = staff_api.post(IMPORT, body.encode(), content_type="application/yaml")

    assert response.status_code == 400, response.content[:500]
    assert len(response.content) < MAX_ANSWER_BYTES
    answer = response.json()
    assert answer["success"] is False
    assert message in answer["error"], answer["error"]
    assert _snapshot() == before


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in BAD_FILES], ids=IDS)
def test_the_system_page_refuses_the_file_and_changes_nothing(
    staff: Client, staff_api: APIClient, text: str | None, message: str
):
    upload = SimpleUploadedFile("backup.yml", _body(text, staff_api).encode())
    before = _snapshot()

    response = staff.post(PAGE_IMPORT, {"action": "import", "file": upload}, headers=HX)

    assert response.status_code == 400
    assert len(response.content) < MAX_ANSWER_BYTES + 8000  # the panel's own markup
    page = html.unescape(response.content.decode())
    assert "Nothing was imported: the file is not usable." in page
    assert message in page
    assert _snapshot() == before


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in BAD_FILES], ids=IDS)
def test_the_command_refuses_the_file_and_changes_nothing(
    tmp_path: Path, staff_api: APIClient, text: str | None, message: str
):
    path = tmp_path / "bad.yml"
    path.write_bytes(_body(text, staff_api).encode())
    before = _snapshot()

    with pytest.raises(CommandError) as caught:
        call_command("import_gpu_config", str(path), stdout=StringIO(), stderr=StringIO())

    assert f"{path}: nothing imported: {message}" in str(caught.value)
    assert len(str(caught.value)) < MAX_ANSWER_BYTES
    assert _snapshot() == before


def test_a_file_with_10000_broken_entries_lists_the_first_50(staff_api: APIClient):
    doc = _good_json(staff_api)
    doc["assignments"] = [{"service": ""}] * 10_000
    before = _snapshot()

    response = staff_api.post(IMPORT, json.dumps(doc), content_type="application/json")

    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == (
        "Invalid request: assignments[0].service: must be a service name, got ''"
    )
    assert len(answer["errors"]) == 50
    assert _snapshot() == before


def test_honest_aliases_still_import(staff_api: APIClient):
    """A hand-edited file may share a block with an anchor; only a blow-up is refused."""
    doc = _good_json(staff_api)
    text = HEADER.replace("assignments: []\n", "").replace("gpus: []\n", "")
    text += "strategy: vram_based\ngpus: " + json.dumps(doc["gpus"]) + "\n"
    text += "assignments:\n"
    text += "  - &first {service: ai-clip, enabled: true}\n"
    text += "  - {service: ai-florence, enabled: true}\n"
    text += "versions:\n  - {number: 1, created_at: x, strategy: vram_based,"
    text += " assignments: {}, warnings: [*first, *first]}\n"

    response = staff_api.post(f"{IMPORT}?dry_run=1", text, content_type="application/yaml")

    assert response.status_code == 200, response.json()
    assert response.json()["dry_run"] is True


# --- query parameters --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["on", "ON", "true", "1", "yes"])
def test_every_true_dry_run_value_is_a_dry_run(staff_api: APIClient, value: str):
    body = staff_api.get(EXPORT).content
    before = _snapshot()

    response = staff_api.post(
        f"{IMPORT}?{urlencode({'dry_run': value})}", body, content_type="application/yaml"
    )

    assert response.status_code == 200
    assert response.json()["dry_run"] is True
    assert response.json()["version"] is None
    assert _snapshot() == before


@pytest.mark.parametrize("value", ["y", "²", "maybe", "tru"])
def test_an_unknown_dry_run_value_is_a_400_and_saves_nothing(staff_api: APIClient, value: str):
    body = staff_api.get(EXPORT).content
    before = _snapshot()

    response = staff_api.post(
        f"{IMPORT}?{urlencode({'dry_run': value})}", body, content_type="application/yaml"
    )

    assert response.status_code == 400
    assert response.json()["error"] == (
        f"Invalid request: dry_run: {value!r} is not true or false "
        "(1/true/yes/on or 0/false/no/off)"
    )
    assert _snapshot() == before


@pytest.mark.parametrize("value", ["off", "0", "false", "no", ""])
def test_a_false_dry_run_value_imports(staff_api: APIClient, value: str):
    body = staff_api.get(EXPORT).content

    response = staff_api.post(
        f"{IMPORT}?{urlencode({'dry_run': value})}", body, content_type="application/yaml"
    )

    assert response.status_code == 200
    assert response.json()["dry_run"] is False
    assert response.json()["version"] == 2
    assert ConfigVersion.objects.count() == 2


@pytest.mark.parametrize("value", ["²", "\u0661", "1.0", "-1", " 1", "99999999999"])
def test_a_version_that_is_not_ascii_digits_is_a_400(staff_api: APIClient, value: str):
    body = staff_api.get(EXPORT).content
    before = _snapshot()

    response = staff_api.post(
        f"{IMPORT}?{urlencode({'version': value})}", body, content_type="application/yaml"
    )

    assert response.status_code == 400
    assert response.json()["error"] == "Invalid request: version: A version number is required."
    assert _snapshot() == before


@pytest.mark.parametrize("value", ["²", "\u0661", "1.0", "99999999999"])
def test_a_confirm_whose_base_version_is_not_ascii_digits_is_a_400(
    staff: Client, staff_api: APIClient, value: str
):
    document = json.dumps(_good_json(staff_api))
    before = _snapshot()

    response = staff.post(
        PAGE_IMPORT,
        {"action": "confirm", "document": document, "base_version": value},
        headers=HX,
    )

    assert response.status_code == 400
    assert "The preview is incomplete: upload the file again." in response.content.decode()
    assert _snapshot() == before


def test_a_confirmed_document_with_a_lone_surrogate_is_refused(staff: Client, staff_api: APIClient):
    """The confirm posts the previewed document back: a client can put anything in it."""
    before = _snapshot()

    response = staff.post(
        PAGE_IMPORT,
        {
            "action": "confirm",
            "document": _service_with_a_lone_surrogate(_good_json(staff_api)),
            "base_version": "1",
        },
        headers=HX,
    )

    assert response.status_code == 400
    assert "assignments[0].service: text that is not valid Unicode" in response.content.decode()
    assert _snapshot() == before


def test_an_unknown_versions_value_on_the_export_is_a_400(staff_api: APIClient):
    assert staff_api.get(EXPORT, {"versions": "on"}).status_code == 200
    response = staff_api.get(EXPORT, {"versions": "²"})
    assert response.status_code == 400
    assert response.json()["error"] == (
        "Invalid request: versions: '²' is not true or false (1/true/yes/on or 0/false/no/off)"
    )
