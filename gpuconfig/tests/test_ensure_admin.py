"""The first admin account (issue 12): ``manage.py ensure_admin`` prints its password once,
keeps it in a private file, and forgets it once the password was changed.

The data folder and its private files: common/tests/test_data_dir.py.
"""

from __future__ import annotations

import re
import stat
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ensure_admin() -> str:
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    return out.getvalue()


def test_the_admin_password_is_printed_once_when_created_and_kept_private(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"

    first = _ensure_admin()
    password = re.search(r"with password (\S+) ", first)
    assert password, first
    password_file = settings.DATA_DIR / "admin-password"
    assert password_file.read_text().strip() == password[1]
    assert _mode(password_file) == 0o600
    assert _mode(settings.DATA_DIR) == 0o700
    assert User.objects.get(username="admin").check_password(password[1])

    second = _ensure_admin()
    assert password[1] not in second
    assert second == f"Log in as 'admin'; its first password is in {password_file}.\n"


def test_after_the_password_changed_the_old_one_is_neither_printed_nor_kept(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    old = re.search(r"with password (\S+) ", _ensure_admin())[1]  # type: ignore[index]
    admin = User.objects.get(username="admin")
    admin.set_password("a-new-long-password-1")
    admin.save()

    out = _ensure_admin()

    assert old not in out
    assert out == "A superuser exists; log in with its credentials.\n"
    assert not (settings.DATA_DIR / "admin-password").exists()
