"""A failed export leaves no backup file behind (issue 17), as an operator runs it.

``export_gpu_config -o FILE`` writes atomically; the guide's export through ``podman exec``
goes to standard output, which the host shell redirects: the shell creates the file before the
command runs, so the guide's line itself must write through a temporary name. These tests run
that very line, with the container's command swapped for this checkout's ``manage.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from devices.services import gpu_inventory_rescan
from gpuconfig.backup import parse_backup

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "development" / "multi-gpu.md"
IN_CONTAINER = "podman exec <project>_gpuconfig-web_1 /app/deploy/entrypoint.sh manage.py"


def _guide_export_command() -> str:
    """The guide's export step: the shell lines of section 8 before the ``podman cp``."""
    section = GUIDE.read_text().split("## 8. Backup and restore", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the guide's backup section has no shell block"
    lines = block[1].split("podman cp", 1)[0]
    command = lines.replace("\\\n", " ")
    assert "export_gpu_config" in command
    return command.replace(IN_CONTAINER, f"{sys.executable} {ROOT / 'manage.py'}")


@pytest.fixture
def host_folder(tmp_path: Path) -> Path:
    """The operator's folder on the host (tmp_path itself holds the test's compose project)."""
    folder = tmp_path / "host"
    folder.mkdir()
    return folder


def _run(command: str, cwd: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GPUCONFIG_SIMULATED_GPUS": str(django_settings.GPUCONFIG_SIMULATED_GPUS),
        "GPUCONFIG_COMPOSE_FILE": str(django_settings.GPUCONFIG_COMPOSE_FILE),
        "GPUCONFIG_OUTPUT_DIR": str(django_settings.GPUCONFIG_OUTPUT_DIR),
    }
    return subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def _database_url(name: str) -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return (
        f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    )


@pytest.fixture
def _postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the subprocess reaches the test database by URL, which needs PostgreSQL")


@pytest.mark.usefixtures("_postgres")
def test_the_guides_export_fails_without_leaving_a_file_when_the_database_is_gone(
    host_folder: Path,
):
    done = _run(_guide_export_command(), host_folder, _database_url("gpuconfig_no_such_database"))

    assert done.returncode != 0
    assert 'database "gpuconfig_no_such_database" does not exist' in done.stderr
    assert sorted(p.name for p in host_folder.iterdir()) == []


@pytest.mark.usefixtures("_postgres")
def test_the_guides_export_writes_the_backup_when_it_succeeds(host_folder: Path):
    gpu_inventory_rescan()

    done = _run(
        _guide_export_command(), host_folder, _database_url(connection.settings_dict["NAME"])
    )

    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in host_folder.iterdir()) == ["gpu-config-backup.yml"]
    backup = parse_backup((host_folder / "gpu-config-backup.yml").read_bytes())
    assert backup.versions == ()


@pytest.mark.usefixtures("_postgres")
def test_a_failed_export_to_a_file_keeps_the_previous_backup(host_folder: Path):
    previous = host_folder / "gpu-config.yml"
    previous.write_text("the previous backup\n")
    command = f"{sys.executable} {ROOT / 'manage.py'} export_gpu_config -o gpu-config.yml"

    done = _run(command, host_folder, _database_url("gpuconfig_no_such_database"))

    assert done.returncode != 0
    assert previous.read_text() == "the previous backup\n"
    assert sorted(p.name for p in host_folder.iterdir()) == ["gpu-config.yml"]
