"""Fixtures for tests that run real podman containers (mark them ``@pytest.mark.containers``).

``compose_project`` writes the stand-in project but does not start it: call ``.start()``.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestration.tests.containers import (
    INSTALL_HINT,
    ComposeProject,
    ensure_standin_image,
    installed_cdi_spec,
    missing_tools,
    new_project_name,
    podman_environment,
    standin_compose,
)


@pytest.fixture(scope="session")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment for podman with this VM's containers.conf; skips where podman is absent."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"podman not installed: {INSTALL_HINT} (missing: {', '.join(missing)})")
    return podman_environment(tmp_path_factory.mktemp("podman-conf"))


@pytest.fixture(scope="session")
def compose_command() -> tuple[str, ...]:
    """The podman-compose of this virtualenv (pinned >= 1.4 in pyproject), by absolute path."""
    found = shutil.which("podman-compose", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("podman-compose is missing from the virtualenv: pip install -e '.[dev]'")
    return (found,)


@pytest.fixture(scope="session")
def standin_image(podman_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The busybox stand-in image, built once and reused across sessions."""
    return ensure_standin_image(podman_env, tmp_path_factory.mktemp("standin-image"))


@pytest.fixture(scope="session")
def cdi_spec() -> Iterator[Path]:
    """A CDI spec with GPUs "0" and "1" that set STANDIN_GPU=<n>; removed afterwards."""
    with installed_cdi_spec() as path:
        yield path


@pytest.fixture
def compose_project(
    podman_env: dict[str, str],
    standin_image: str,
    cdi_spec: Path,
    compose_command: tuple[str, ...],
    tmp_path: Path,
) -> Iterator[ComposeProject]:
    """The five stand-in services in a fresh folder under a unique name; removed afterwards."""
    project = ComposeProject(
        directory=tmp_path,
        name=new_project_name(),
        compose_command=compose_command,
        env=podman_env,
    )
    project.write_base(standin_compose(standin_image))
    try:
        yield project
    finally:
        project.remove()


# NVML faked at its function boundary, for the tests that read the VRAM real containers use
# (test_vram_*): the detection tests' fixture, not a copy of it.
from devices.tests.conftest import fake_nvml  # noqa: E402

__all__ = ["fake_nvml"]
