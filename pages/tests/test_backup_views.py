"""Settings > System: Download backup and the restore form, through Django's test client."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from ruamel.yaml import YAML

from devices.services import gpu_inventory_rescan
from gpuconfig.backup import FORMAT, MAX_BYTES
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion, GpuConfiguration, SystemSetting
from gpuconfig.services import (
    ASSIGNMENTS_FILE,
    AssignmentChange,
    gpu_config_save,
    system_settings_update,
)
from gpuconfig.system_settings import RESERVE_KEY

pytestmark = pytest.mark.django_db

SYSTEM_URL = "/settings/system/"
DOWNLOAD_URL = "/settings/system/backup/"
IMPORT_URL = "/settings/system/backup/import/"
HX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def _saved(db: Any) -> None:
    gpu_inventory_rescan()
    system_settings_update(values={RESERVE_KEY: 1024})
    gpu_config_save(
        user=None,
        strategy=StrategyName.VRAM_BASED,
        changes=(AssignmentChange("ai-llm", gpu_index=0),),
    )


def _text(response: Any) -> str:
    return html.unescape(response.content.decode())


def _confirm_fields(response: Any) -> dict[str, str]:
    """The hidden fields of the preview's confirm form, as a browser would post them."""
    raw = response.content.decode()
    form = re.search(r'<form method="post" action="[^"]+"\s+hx-post.*?</form>', raw, re.S)
    assert form, "no confirm form"
    found = re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form[0])
    return {name: html.unescape(value) for name, value in found}


def _upload(content: bytes, name: str = "backup.yml") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/yaml")


def _file_bytes() -> bytes:
    return (Path(django_settings.GPUCONFIG_OUTPUT_DIR) / ASSIGNMENTS_FILE).read_bytes()


def test_staff_see_the_download_link_and_the_upload_form_on_the_system_tab(staff: Client):
    page = _text(staff.get(SYSTEM_URL))
    assert '<h2 id="backup-heading">Backup and restore</h2>' in page
    assert f'href="{DOWNLOAD_URL}" download>Download backup</a>' in page
    form = re.search(r'<form id="backup-upload".*?</form>', page, re.S)
    assert form, "no upload form"
    assert f'action="{IMPORT_URL}"' in form.group(0)
    assert 'enctype="multipart/form-data"' in form.group(0)
    assert 'name="csrfmiddlewaretoken"' in form.group(0)
    assert "at most 2 MB" in form.group(0)
    assert MAX_BYTES == 2 * 1024 * 1024  # what the form says


def test_viewers_see_neither_the_link_nor_the_form(member: Client):
    page = _text(member.get(SYSTEM_URL))
    assert "Only staff users can download or restore backups" in page
    assert DOWNLOAD_URL not in page
    assert "backup-upload" not in page


def test_download_is_a_yaml_attachment_of_the_saved_configuration(staff: Client):
    response = staff.get(DOWNLOAD_URL)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/yaml; charset=utf-8"
    assert re.fullmatch(
        r'attachment; filename="gpu-config-\d{8}-\d{6}-v1\.yml"', response["Content-Disposition"]
    )
    doc = YAML(typ="safe").load(response.content)
    assert doc["format"] == FORMAT
    assert doc["configuration_version"] == 1
    assert doc["system_settings"]["vram_reserve_mb"] == 1024
    assert "versions" not in doc
    with_history = YAML(typ="safe").load(staff.get(DOWNLOAD_URL, {"versions": "1"}).content)
    assert [v["number"] for v in with_history["versions"]] == [1]


def test_viewers_get_403_for_the_download_and_the_upload(member: Client):
    assert member.get(DOWNLOAD_URL).status_code == 403
    response = member.post(IMPORT_URL, {"action": "import", "file": _upload(b"x")})
    assert response.status_code == 403
    assert "Only staff users may download or restore backups." in _text(response)
    assert ConfigVersion.objects.count() == 1


def test_anonymous_users_are_sent_to_the_login_page():
    client = Client()
    for response in (client.get(DOWNLOAD_URL), client.post(IMPORT_URL, {})):
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_the_upload_needs_a_csrf_token(staff_user: Any):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    content = client.get(DOWNLOAD_URL).content
    response = client.post(IMPORT_URL, {"action": "import", "file": _upload(content)})
    assert response.status_code == 403
    assert ConfigVersion.objects.count() == 1


def test_preview_shows_what_would_change_and_saves_nothing_until_confirmed(staff: Client):
    content = staff.get(DOWNLOAD_URL).content
    system_settings_update(values={RESERVE_KEY: 0})
    gpu_config_save(
        user=None,
        strategy=StrategyName.BALANCED,
        changes=(AssignmentChange("ai-clip", enabled=False),),
    )
    file_before = _file_bytes()

    preview = staff.post(IMPORT_URL, {"action": "preview", "file": _upload(content)}, headers=HX)

    assert preview.status_code == 200
    assert preview["X-GpuConfig-Fragment"] == "backup"
    page = _text(preview)
    assert "Preview: importing would save version 3" in page
    assert "<li>strategy: balanced → vram_based</li>" in page
    assert "<li>ai-clip: enabled; unassigned → GPU 0</li>" in page
    assert "<li>VRAM reserve (MiB): 0 → 1024</li>" in page
    assert ConfigVersion.objects.count() == 2
    assert SystemSetting.objects.get(key=RESERVE_KEY).value == 0
    assert _file_bytes() == file_before

    fields = _confirm_fields(preview)
    assert fields["action"] == "confirm"
    assert fields["base_version"] == "2"
    assert '<button type="submit" class="primary">Import as version 3</button>' in page

    done = staff.post(IMPORT_URL, fields, headers=HX)

    assert done.status_code == 200
    assert "Imported as version 3. Apply &amp; Restart" in done.content.decode()
    assert ConfigVersion.objects.count() == 3
    assert ConfigVersion.objects.get(number=3).strategy == "vram_based"
    assert GpuConfiguration.objects.get(service_name="ai-clip").enabled is True
    assert SystemSetting.objects.get(key=RESERVE_KEY).value == 1024
    assert b"version: 3" in _file_bytes()


def test_a_confirm_after_someone_else_saved_is_a_conflict_and_saves_nothing(staff: Client):
    content = staff.get(DOWNLOAD_URL).content
    fields = _confirm_fields(
        staff.post(IMPORT_URL, {"action": "preview", "file": _upload(content)})
    )
    gpu_config_save(user=None, strategy=StrategyName.BALANCED)  # someone else, meanwhile

    response = staff.post(IMPORT_URL, fields, headers=HX)

    assert response.status_code == 409
    assert "Nothing was imported. The configuration was saved by someone else (version 2)" in (
        _text(response)
    )
    assert ConfigVersion.objects.count() == 2


def test_direct_import_shows_the_result_and_warnings_in_place(staff: Client):
    content = staff.get(DOWNLOAD_URL).content.replace(b"service: ai-florence", b"service: ai-old")
    response = staff.post(IMPORT_URL, {"action": "import", "file": _upload(content)}, headers=HX)
    assert response.status_code == 200
    page = _text(response)
    assert "Imported as version 2." in page
    assert "ai-old is in the file but not in this compose file; it is left out." in page
    assert "ai-florence is in this compose file but not in the backup" in page
    assert ConfigVersion.objects.count() == 2


def test_without_javascript_a_preview_is_a_page_and_an_import_redirects(staff: Client):
    content = staff.get(DOWNLOAD_URL).content.replace(b"service: ai-florence", b"service: ai-old")
    preview = staff.post(IMPORT_URL, {"action": "preview", "file": _upload(content)})
    assert preview.status_code == 200
    page = _text(preview)
    assert "<title>Settings \u203a System \u203a Backup · GPU Config</title>" in page
    assert "Preview: importing would save version 2" in page

    response = staff.post(IMPORT_URL, {"action": "import", "file": _upload(content)})

    assert response.status_code == 302
    assert response["Location"] == SYSTEM_URL + "#backup"
    page = _text(staff.get(SYSTEM_URL))
    assert '<li class="notice success">Imported as version 2.' in page
    assert (
        '<li class="notice warning">ai-old is in the file but not in this compose file; '
        "it is left out.</li>" in page
    )
    assert ConfigVersion.objects.count() == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"format: gpuconfig-backup\nschema_version: 7\n", "schema_version: 7 is newer than"),
        (b"strategy: [oops\n", "not valid YAML"),
        (b"services: {}\n", "format: expected 'gpuconfig-backup', got no format field"),
    ],
    ids=["newer schema", "yaml syntax", "foreign"],
)
def test_a_bad_upload_changes_nothing_and_says_why(staff: Client, content: bytes, message: str):
    file_before = _file_bytes()
    response = staff.post(IMPORT_URL, {"action": "import", "file": _upload(content)}, headers=HX)
    assert response.status_code == 400
    assert response["X-GpuConfig-Fragment"] == "backup"
    page = _text(response)
    assert "Nothing was imported: the file is not usable." in page
    assert message in page
    assert ConfigVersion.objects.count() == 1
    assert _file_bytes() == file_before


def test_a_bad_field_is_named_in_the_answer(staff: Client):
    content = staff.get(DOWNLOAD_URL).content.replace(
        b"vram_reserve_mb: 1024", b"vram_reserve_mb: -5"
    )
    response = staff.post(IMPORT_URL, {"action": "preview", "file": _upload(content)}, headers=HX)
    assert response.status_code == 400
    assert (
        '<li class="field-error">system_settings.vram_reserve_mb: VRAM reserve (MiB): must be '
        "between 0 and 65536 MiB, got -5</li>" in _text(response)
    )


def test_an_oversized_or_missing_upload_is_refused(staff: Client):
    big = staff.post(
        IMPORT_URL, {"action": "import", "file": _upload(b"#" * (MAX_BYTES + 1))}, headers=HX
    )
    assert big.status_code == 413
    assert f"a backup may be at most {MAX_BYTES} bytes. Nothing was imported." in _text(big)
    missing = staff.post(IMPORT_URL, {"action": "import"}, headers=HX)
    assert missing.status_code == 400
    assert "Choose a backup file to upload." in _text(missing)
    assert ConfigVersion.objects.count() == 1


def test_the_download_accepts_only_get_and_the_import_only_post(staff: Client):
    assert staff.post(DOWNLOAD_URL).status_code == 405
    assert staff.get(IMPORT_URL).status_code == 405
