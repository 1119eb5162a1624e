"""Bodies are refused over their limit before they are read; uploads stay in memory
(issue 17, item 3). tests/production/test_body_limits.py sends the same through gunicorn.
"""

from __future__ import annotations

import io

import pytest
from django.conf import settings as django_settings
from django.test import Client

from common.request_limits import BoundedMemoryUploadHandler

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
BACKUP_IMPORT = "/settings/system/backup/import/"


def _multipart(size: int) -> tuple[bytes, str]:
    boundary = "gpuconfig-test-boundary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body += b"x" * size + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_a_large_multipart_body_to_the_login_page_is_a_413_before_it_is_read(tmp_path, settings):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(uploads)
    body, content_type = _multipart(3 * 1024 * 1024)

    response = Client().post(LOGIN, data=body, content_type=content_type)

    assert response.status_code == 413
    assert response.content.decode() == (
        f"The request body is {len(body):,} bytes; the limit is 262,144 bytes. "
        "Nothing was read or changed."
    )
    assert list(uploads.iterdir()) == []


def test_a_declared_300_mb_body_is_refused_on_its_content_length_alone():
    # The body itself is not there: the answer comes from the header, nothing is read.
    response = Client().post(
        LOGIN, data=b"x", content_type="text/plain", CONTENT_LENGTH=str(300 * 1024 * 1024)
    )

    assert response.status_code == 413
    assert "The request body is 314,572,800 bytes" in response.content.decode()


def test_the_api_says_it_in_its_own_error_shape(member_api):
    response = member_api.post(
        "/api/system/gpu-config/preview", data=b"[" * 300_000, content_type="application/json"
    )

    assert response.status_code == 413
    assert response.json() == {
        "success": False,
        "error": "The request body is 300,000 bytes; the limit is 262,144 bytes. "
        "Nothing was read or changed.",
    }


def test_the_backup_import_takes_a_backup_sized_body_but_not_more(staff_user, settings):
    client = Client()
    client.force_login(staff_user)
    over, content_type = _multipart(2200 * 1024)

    response = client.post(BACKUP_IMPORT, data=over, content_type=content_type)

    assert response.status_code == 413
    assert "the limit is 2,150,400 bytes for a backup upload." in response.content.decode()


def test_the_import_api_takes_a_backup_sized_body_but_not_more(staff_user):
    client = Client()
    client.force_login(staff_user)
    url = "/api/system/gpu-config/import?dry_run=1"

    # A 300 KiB body is over the API's usual limit, but a backup may be 2 MiB: it is read,
    # and refused for what it says, not for its size.
    sized = client.post(url, data=b"#" * (300 * 1024), content_type="application/yaml")
    over = client.post(url, data=b"#" * (2 * 1024 * 1024 + 1), content_type="application/yaml")

    assert sized.status_code == 400, sized.content[:300]
    assert over.status_code == 413
    assert over.json()["error"] == (
        "The request body is 2,097,153 bytes; the limit is 2,097,152 bytes for a backup "
        "upload. Nothing was read or changed."
    )


def test_an_upload_is_held_in_memory_whatever_django_would_spill_to_disk(
    staff_user, settings, tmp_path
):
    # Django's own handlers write files over FILE_UPLOAD_MAX_MEMORY_SIZE to the temporary
    # folder; here that folder does not exist, so a write would fail the request.
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "missing")
    client = Client()
    client.force_login(staff_user)
    big = io.BytesIO(b"#" * (django_settings.GPUCONFIG_MAX_UPLOAD_FILE_BYTES + 10))
    big.name = "backup.yml"

    response = client.post(BACKUP_IMPORT, {"action": "preview", "file": big})

    assert response.status_code == 413
    assert (
        f"backup.yml is {django_settings.GPUCONFIG_MAX_UPLOAD_FILE_BYTES + 10} bytes; "
        "a backup may be at most"
    ) in response.content.decode()
    assert not (tmp_path / "missing").exists()


def test_the_upload_handler_keeps_no_more_than_the_limit_and_reports_the_real_size(settings):
    settings.GPUCONFIG_MAX_UPLOAD_FILE_BYTES = 1000
    handler = BoundedMemoryUploadHandler()
    handler.new_file("file", "backup.yml", "application/yaml", None)
    for start in range(0, 64 * 1024, 4096):
        assert handler.receive_data_chunk(b"y" * 4096, start) is None

    upload = handler.file_complete(64 * 1024)

    assert upload.size == 64 * 1024
    assert len(upload.read()) == 1001  # one byte past the limit tells the view it is over
