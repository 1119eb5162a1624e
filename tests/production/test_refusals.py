"""Production mode (GPUCONFIG_PRODUCTION=1) refuses the embedded defaults, one sentence each."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.production import (
    REFUSE_DEBUG,
    REFUSE_FILESYSTEM_BROKER,
    REFUSE_MISSING_KEY,
    REFUSE_SQLITE,
)
from tests.production.support import manage, needs_postgresql, production_env

pytestmark = needs_postgresql

ALL_REFUSALS = [REFUSE_SQLITE, REFUSE_FILESYSTEM_BROKER, REFUSE_MISSING_KEY, REFUSE_DEBUG]


def _refused_with(result_stderr: str, expected: str) -> None:
    assert "ImproperlyConfigured" in result_stderr
    assert expected in result_stderr
    others = [r for r in ALL_REFUSALS if r != expected]
    assert not any(r in result_stderr for r in others), result_stderr


def test_the_documented_production_env_starts(tmp_path: Path) -> None:
    result = manage("check", env=production_env(tmp_path))

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("database_url", ["", "sqlite:///db.sqlite3"])
def test_production_refuses_sqlite(tmp_path: Path, database_url: str) -> None:
    data_dir = tmp_path / "data"
    env = production_env(data_dir, DATABASE_URL=database_url)
    if not database_url:
        del env["DATABASE_URL"]

    result = manage("check", env=env)

    assert result.returncode == 1
    _refused_with(result.stderr, REFUSE_SQLITE)
    # Refused before anything was written: no data folder for a SQLite file or a secret.
    assert not data_dir.exists()


@pytest.mark.parametrize("broker_url", ["", "filesystem://"])
def test_production_refuses_the_filesystem_broker(tmp_path: Path, broker_url: str) -> None:
    env = production_env(tmp_path, CELERY_BROKER_URL=broker_url)
    if not broker_url:
        del env["CELERY_BROKER_URL"]

    result = manage("check", env=env)

    assert result.returncode == 1
    _refused_with(result.stderr, REFUSE_FILESYSTEM_BROKER)


@pytest.mark.parametrize("secret_key", ["", "   "])
def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path, secret_key: str) -> None:
    env = production_env(tmp_path, DJANGO_SECRET_KEY=secret_key)

    result = manage("check", env=env)

    assert result.returncode == 1
    _refused_with(result.stderr, REFUSE_MISSING_KEY)
    # The embedded default would have invented a key and kept it in the data folder.
    assert not (tmp_path / "secret-key").exists()


def test_production_refuses_debug(tmp_path: Path) -> None:
    env = production_env(tmp_path, DJANGO_DEBUG="1")

    result = manage("check", env=env)

    assert result.returncode == 1
    _refused_with(result.stderr, REFUSE_DEBUG)


def test_every_refusal_is_listed_at_once(tmp_path: Path) -> None:
    env = production_env(tmp_path, DJANGO_SECRET_KEY="", DJANGO_DEBUG="1")
    del env["DATABASE_URL"], env["CELERY_BROKER_URL"]

    result = manage("check", env=env)

    assert result.returncode == 1
    for refusal in ALL_REFUSALS:
        assert refusal in result.stderr


def test_without_production_mode_the_embedded_defaults_still_work(tmp_path: Path) -> None:
    env = production_env(tmp_path, DJANGO_SECRET_KEY="", DJANGO_DEBUG="1")
    del env["GPUCONFIG_PRODUCTION"], env["DATABASE_URL"], env["CELERY_BROKER_URL"]

    # As bin/run starts: the data folder first (the settings only read it), then the rest.
    prepared = manage("prepare_data_dir", env=env)
    result = manage("check", env=env)

    assert prepared.returncode == 0, prepared.stderr
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "secret-key").is_file()
