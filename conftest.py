"""Fixtures shared by every app's tests: users of each kind, API clients, the reference GPUs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from common.data_dir import needs_of, prepare
from devices.services import reset_sampler
from orchestration import podman
from orchestration import services as orchestration_services
from orchestration.selectors import reset_container_health_cache, reset_dependency_health_cache

# One Chromium for every browser test, wherever it lives (see tests/browser/fixtures.py).
pytest_plugins = ["tests.browser.fixtures"]

ROOT = Path(__file__).resolve().parent
REFERENCE_GPUS = ROOT / "devices" / "simulated" / "reference-gpus.json"
REFERENCE_COMPOSE = ROOT / "docker-compose.prod.yml"

# Tests that exercise a real component CI must have. Under GPUCONFIG_REQUIRE_REAL=1 (set by
# .ci/run) a skip of one of these is turned into a failure, so CI cannot pass by skipping.
REAL_COMPONENT_MARKERS = ("containers", "browser", "stack")


def pytest_configure(config: pytest.Config) -> None:
    """The data folder as bin/run's ``manage.py prepare_data_dir`` leaves it: the settings
    only read it (the secret key, the SQLite file of bin/test's second pass, the broker's
    folders), and the manage.py and worker processes that tests start read it too."""
    prepare(needs_of(django_settings))
    if django_settings.GPUCONFIG_SECRET_KEY_FILE is not None:
        # Read when the settings loaded, before the file existed on a fresh clone.
        django_settings.SECRET_KEY = django_settings.GPUCONFIG_SECRET_KEY_FILE.read_text().strip()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        report.skipped
        and os.environ.get("GPUCONFIG_REQUIRE_REAL") == "1"
        and any(item.get_closest_marker(m) for m in REAL_COMPONENT_MARKERS)
    ):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"real-component test skipped under GPUCONFIG_REQUIRE_REAL=1: {reason}"
    return report


@pytest.fixture(autouse=True)
def _reference_setup(settings, tmp_path: Path) -> Iterator[None]:
    """Every test starts on the simulated reference GPUs, with its own output folder."""
    settings.GPUCONFIG_SIMULATED_GPUS = REFERENCE_GPUS
    compose = tmp_path / "project" / "docker-compose.prod.yml"
    compose.parent.mkdir()
    if REFERENCE_COMPOSE.exists():
        shutil.copy(REFERENCE_COMPOSE, compose)
    settings.GPUCONFIG_COMPOSE_FILE = compose
    settings.GPUCONFIG_OUTPUT_DIR = compose.parent / "config"
    reset_sampler()
    reset_container_health_cache()
    reset_dependency_health_cache()
    yield
    reset_sampler()
    reset_container_health_cache()
    reset_dependency_health_cache()


@pytest.fixture
def a400_removed(settings, tmp_path: Path) -> Path:
    """Detection from now on sees only the A5500, as if the A400 had been pulled out.

    The inventory changes at the next re-scan, which each test triggers its own way.
    """
    one = tmp_path / "a5500-only.json"
    one.write_text(
        '{"gpus": [{"index": 0, "name": "NVIDIA RTX A5500", "vram_total_mb": 24564,'
        ' "vram_used_mb": 100, "compute_capability": "8.6"}]}'
    )
    settings.GPUCONFIG_SIMULATED_GPUS = one
    return one


@pytest.fixture
def staff_user(db) -> User:
    return User.objects.create_user("operator", password="operator-pass-1", is_staff=True)


@pytest.fixture
def member_user(db) -> User:
    return User.objects.create_user("viewer", password="viewer-pass-1", is_staff=False)


@pytest.fixture
def anon_api() -> APIClient:
    return APIClient()


@pytest.fixture
def staff_api(staff_user: User) -> APIClient:
    client = APIClient()
    client.force_login(staff_user)
    return client


@pytest.fixture
def member_api(member_user: User) -> APIClient:
    client = APIClient()
    client.force_login(member_user)
    return client


@pytest.fixture
def staff(staff_user: User) -> Client:
    """A browser logged in as staff (the pages' session login, not the API's)."""
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def member(member_user: User) -> Client:
    """A browser logged in as a viewer."""
    client = Client()
    client.force_login(member_user)
    return client


@pytest.fixture
def startable(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Apply and rollback can start without podman: their probe finds a podman-compose
    1.6.0, and the run is not handed to Celery. The list collects the ids of the runs that
    would have been enqueued, in order."""
    orchestration_services.forget_probe()
    enqueued: list[int] = []
    monkeypatch.setattr(
        orchestration_services,
        "compose_tool",
        lambda **kwargs: podman.ComposeTool(argv=("podman-compose",), version="1.6.0"),
    )
    monkeypatch.setattr(orchestration_services, "_enqueue", enqueued.append)
    return enqueued
