"""The data folder (issue 18): loading the settings creates nothing; ``manage.py
prepare_data_dir`` (bin/run and the entrypoint run it first) creates what the embedded
defaults read, private from the first byte; the system check names what is missing."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from common.data_dir import needs_of, prepare
from common.files import private_file_create
from tests.production.support import manage, needs_postgresql, production_env

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED = ("DATABASE_URL", "DJANGO_SECRET_KEY", "CELERY_BROKER_URL", "GPUCONFIG_PRODUCTION")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _embedded_env(data: Path) -> dict[str, str]:
    """This environment on the embedded defaults (bin/run's), with ``data`` as data folder."""
    env = {key: value for key, value in os.environ.items() if key not in EMBEDDED}
    return env | {"GPUCONFIG_DATA_DIR": str(data), "DJANGO_SETTINGS_MODULE": "config.settings"}


def _python(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _python(
        "import sys; from django.core.management import execute_from_command_line; "
        f"execute_from_command_line(['manage.py', *{list(args)!r}])",
        env,
    )


@pytest.mark.parametrize("exists", [False, True], ids=["no folder", "empty folder"])
def test_loading_the_settings_creates_nothing(tmp_path: Path, exists: bool) -> None:
    data = tmp_path / "data"
    if exists:
        data.mkdir(mode=0o755)
    script = (
        "import django; django.setup(); from django.conf import settings; "
        "print(len(settings.INSTALLED_APPS), settings.DATABASES['default']['NAME'])"
    )

    result = _python(script, _embedded_env(data))

    assert result.returncode == 0, result.stderr
    assert str(data / "gpuconfig.sqlite3") in result.stdout
    if exists:
        assert list(data.iterdir()) == []
        assert _mode(data) == 0o755, "not even tightened: only prepare_data_dir does that"
    else:
        assert not data.exists()


def test_without_preparing_the_checks_say_what_is_missing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    database = tmp_path / "elsewhere.sqlite3"
    database.touch()  # a database that exists: the checks run to their end
    env = _embedded_env(data) | {"DATABASE_URL": f"sqlite:///{database}"}

    result = _manage("check", env=env)

    assert result.returncode == 1
    assert (
        f"common.E001) No secret key: DJANGO_SECRET_KEY is not set and {data / 'secret-key'} "
        "does not exist." in result.stderr
    )
    assert "common.E003) The filesystem Celery broker's folder " in result.stderr
    assert "HINT: Run `manage.py prepare_data_dir` (bin/run and the image's entrypoint" in (
        result.stderr
    )
    assert not data.exists(), "the check only reads"


def test_a_missing_sqlite_database_is_refused_never_created(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()  # SQLite could create the file here, with the umask's mode

    result = _manage("check", env=_embedded_env(data))

    assert result.returncode == 1
    assert f"The SQLite database {data / 'gpuconfig.sqlite3'} does not exist." in result.stderr
    assert "Run `manage.py prepare_data_dir`" in result.stderr
    assert list(data.iterdir()) == []


def test_prepare_data_dir_creates_what_bin_run_needs_private_from_the_first_byte(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = _embedded_env(data)
    # umask 022, as on a default system: without care, files would be 0644 in a 0755 folder.
    prepare_script = (
        "import os, sys; os.umask(0o022); from django.core.management import "
        "execute_from_command_line; execute_from_command_line(['manage.py', 'prepare_data_dir'])"
    )

    first = _python(prepare_script, env)

    assert first.returncode == 0, first.stderr
    assert f"Created a random secret key in {data / 'secret-key'} (0600)." in first.stdout
    assert _mode(data) == 0o700
    assert _mode(data / "secret-key") == 0o600
    assert _mode(data / "gpuconfig.sqlite3") == 0o600
    assert len((data / "secret-key").read_text().strip()) > 40
    for folder in ("queue", "processed", "control"):
        assert (data / "celery-broker" / folder).is_dir()
    # What bin/run runs next finds everything: the checks pass and migrate fills the file.
    checked = _manage("check", env=env)
    assert checked.returncode == 0, checked.stderr
    assert "System check identified no issues" in checked.stdout

    key = (data / "secret-key").read_text()
    again = _python(prepare_script, env)

    assert again.returncode == 0, again.stderr
    assert again.stdout == "", "a second start creates nothing"
    assert (data / "secret-key").read_text() == key, "the key is kept across starts"


def test_an_existing_data_folder_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)

    result = _manage("prepare_data_dir", env=_embedded_env(data))

    assert result.returncode == 0, result.stderr
    assert _mode(data) == 0o700


def test_a_configuration_without_embedded_defaults_needs_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    production = SimpleNamespace(
        DATA_DIR=data,
        GPUCONFIG_SECRET_KEY_FILE=None,
        DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "gpuconfig"}},
        CELERY_BROKER_URL="redis://redis:6379/0",
    )

    assert prepare(needs_of(production)) == []
    assert not data.exists()


@needs_postgresql
def test_in_production_mode_prepare_data_dir_creates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"

    result = manage("prepare_data_dir", env=production_env(data))

    assert (result.returncode, result.stdout) == (0, ""), result.stderr
    assert not data.exists()


def test_a_private_file_is_0600_whatever_the_umask(tmp_path):
    tmp_path = tmp_path / "private"
    tmp_path.mkdir()
    old = os.umask(0)
    try:
        assert private_file_create(tmp_path / "secret", "s3cret") is True
        assert private_file_create(tmp_path / "secret", "other") is False, "never overwritten"
    finally:
        os.umask(old)
    assert _mode(tmp_path / "secret") == 0o600
    assert (tmp_path / "secret").read_text() == "s3cret"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"], "no temporary file left"
