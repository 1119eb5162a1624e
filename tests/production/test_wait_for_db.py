"""``manage.py wait_for_db`` against the real PostgreSQL, as the stack's containers run it."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests.production.support import (
    ROOT,
    database_url,
    free_port,
    manage,
    needs_postgresql,
    production_env,
)

pytestmark = [needs_postgresql, pytest.mark.django_db]


def test_fails_after_the_timeout_when_nothing_listens(tmp_path: Path) -> None:
    port = free_port()  # closed again: connections to it are refused
    name = connection.settings_dict["NAME"]
    env = production_env(tmp_path, DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/{name}")

    started = time.monotonic()
    result = manage("wait_for_db", "--timeout", "2", env=env)
    elapsed = time.monotonic() - started

    assert result.returncode == 1
    where = f"postgresql 127.0.0.1:{port}/{name}"
    assert result.stdout.startswith(f"Waiting for database {where}: not accepting connections: ")
    assert "(0 s of 2 s)" in result.stdout
    assert f"CommandError: Database {where} was not ready after 2 s: " in result.stderr
    assert "Connection refused" in result.stderr
    assert 2 <= elapsed < 15


def test_returns_at_once_when_the_database_accepts_connections(tmp_path: Path) -> None:
    result = manage("wait_for_db", "--timeout", "10", env=production_env(tmp_path))

    assert result.returncode == 0, result.stderr
    where = f"postgresql 127.0.0.1:5432/{connection.settings_dict['NAME']}"
    assert result.stdout == f"Database {where} accepts connections (after 0 s).\n"


def test_migrated_returns_at_once_on_a_migrated_database(tmp_path: Path) -> None:
    result = manage("wait_for_db", "--migrated", "--timeout", "10", env=production_env(tmp_path))

    assert result.returncode == 0, result.stderr
    assert "is ready and migrated" in result.stdout


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A database that exists but was never migrated (a first start of the stack)."""
    name = f"gpuconfig_wait_{uuid.uuid4().hex[:8]}"
    admin_url = database_url({**connection.settings_dict, "NAME": "postgres"})
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url({**connection.settings_dict, "NAME": name})
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrated_fails_after_the_timeout_when_nobody_migrates(
    tmp_path: Path, empty_database: str
) -> None:
    env = production_env(tmp_path, DATABASE_URL=empty_database)

    result = manage("wait_for_db", "--migrated", "--timeout", "1", env=env)

    assert result.returncode == 1
    assert "was not ready after 1 s: " in result.stderr
    assert "migration(s) not applied yet (contenttypes.0001_initial" in result.stderr
    assert "waiting for `manage.py migrate` (the web container runs it)" in result.stderr


def test_worker_waits_until_the_web_container_has_migrated(
    tmp_path: Path, empty_database: str
) -> None:
    env = production_env(tmp_path, DATABASE_URL=empty_database)
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "wait_for_db", "--migrated", "--timeout", "120"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        first_line = worker.stdout.readline()
        assert "migration(s) not applied yet" in first_line
        assert worker.poll() is None  # still waiting

        migrate = manage("migrate", "--noinput", env=env, timeout=180)
        assert migrate.returncode == 0, migrate.stderr

        rest, errors = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, errors
    assert "is ready and migrated" in rest
