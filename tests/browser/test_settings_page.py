"""Settings > GPU Configuration in a real Chromium, on the simulated reference GPUs."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connection
from playwright.sync_api import expect

from devices.services import gpu_inventory_rescan, reset_sampler
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import AssignmentChange, gpu_config_save
from orchestration.selectors import reset_container_health_cache
from orchestration.services import forget_probe
from tests.browser.fixtures import PHONE

pytestmark = pytest.mark.browser

# Under Balanced with Isolation-first in force, ai-florence stays on the A400 beside the
# pinned zoo (fewer restarts, issue 19: within 2% of the optimum), so the zoo gets its 2 GiB
# minimum while ai-clip and ai-yolo26 move to the A5500.
ADJUSTED = "ai-enrichment VRAM budget (6.6 GiB) exceeds GPU 1 (4.0 GiB). Auto-adjusted to 2.0 GiB."
FINAL_LABELS = re.compile(r"Succeeded|Rolled back|Rollback failed|Failed|Interrupted")


@pytest.fixture(autouse=True)
def _inventory(transactional_db: Any) -> None:
    gpu_inventory_rescan()
    forget_probe()


def _manual_design(user: Any) -> None:
    """Save the design's example assignments (manual: the zoo alone on the A400)."""
    pins = {"ai-llm": 0, "ai-yolo26": 0, "ai-florence": 0, "ai-clip": 0, "ai-enrichment": 1}
    gpu_config_save(
        user=user,
        strategy=StrategyName.MANUAL,
        changes=[AssignmentChange(service=s, gpu_index=g) for s, g in pins.items()],
    )


def test_staff_user_previews_a_strategy_moves_the_zoo_and_saves(
    new_page, live_server, staff_user, screenshot
):
    # An installation that already runs Isolation-first (version 1).
    gpu_config_save(user=staff_user, strategy=StrategyName.ISOLATION_FIRST)
    page = new_page()
    page.goto("/")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("operator-pass-1")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/settings/gpu/$"))
    expect(page.get_by_role("heading", name="GPU 0: NVIDIA RTX A5500")).to_be_visible()
    expect(page.get_by_role("heading", name="GPU 1: NVIDIA RTX A400")).to_be_visible()
    expect(page.locator("#gpu-cards")).to_contain_text("18.9/24.0 GiB")
    # The cards refresh themselves (a poll of the fragment, not a page load).
    with page.expect_response(lambda r: "part=gpu-cards" in r.url, timeout=10_000) as poll:
        pass
    assert poll.value.status == 200
    expect(page.get_by_role("heading", name="GPU 0: NVIDIA RTX A5500")).to_be_visible()
    screenshot(page, "settings-gpu-configuration")

    # By keyboard: from Isolation-first, the arrow key selects the next strategy, Balanced.
    page.locator("#strategy-isolation_first").focus()
    page.keyboard.press("ArrowDown")
    expect(page.locator("#strategy-balanced")).to_be_checked()
    # Balanced keeps the zoo where version 1 runs it (fewer restarts, issue 19).
    expect(page.locator("#gpu-ai-enrichment option:checked")).to_have_text("Auto (GPU 1)")
    expect(page.locator("#strategy-balanced")).to_be_focused()  # kept across the swap
    expect(page.locator("#unsaved-badge")).to_have_text("Unsaved changes")
    assert ConfigVersion.objects.count() == 1, "choosing a strategy saves nothing"

    page.locator("#gpu-ai-enrichment").select_option("1")
    expect(page.locator("#budget-ai-enrichment")).to_have_value("2")
    expect(page.locator("#row-ai-enrichment")).to_contain_text("Adjusted")
    expect(page.locator("#notes-ai-enrichment")).to_contain_text(ADJUSTED)
    expect(page.locator("#warnings")).to_contain_text(f"{ADJUSTED} Some models may not load.")
    screenshot(page, "settings-warning")

    page.get_by_role("button", name="Preview Changes").click()
    diff = page.locator("#diff")
    expect(diff).to_contain_text("Changes from saved version 1")
    expect(diff).to_contain_text("ai-clip: GPU 1 → GPU 0")
    expect(diff).to_contain_text("ai-yolo26: GPU 1 → GPU 0")
    screenshot(page, "settings-preview")

    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#gpu-form .notice.success")).to_contain_text("Saved as version 2")
    expect(page.locator("#version-2")).to_contain_text("operator")

    page.reload()
    expect(page.locator("#strategy-balanced")).to_be_checked()
    expect(page.locator("#gpu-ai-enrichment")).to_have_value("1")
    expect(page.locator("#budget-ai-enrichment")).to_have_value("2")
    page.get_by_role("link", name="Compare with current (version 1)").click()
    expect(page.locator("#version-diff")).to_contain_text("Version 1 → current (version 2)")
    expect(page.locator("#version-diff")).to_contain_text("ai-clip: GPU 1 → GPU 0")
    screenshot(page, "settings-history")
    assert page.js_errors == []


def test_apply_without_podman_compose_shows_what_to_install(
    new_page, staff_user, settings, screenshot
):
    settings.GPUCONFIG_COMPOSE_COMMAND = ["/nonexistent/podman-compose"]
    _manual_design(staff_user)
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    # Said before it is pressed (issue 16): disabled, with what to install.
    expect(page.get_by_role("button", name="Apply & Restart Services")).to_be_disabled()
    notice = page.locator("#apply-unready-note")
    expect(notice).to_contain_text("Apply & Restart cannot work here:")
    expect(notice).to_contain_text("podman-compose")
    expect(page.locator("#page-alert")).to_be_empty()
    screenshot(page, "apply-unavailable")
    assert page.js_errors == []


@pytest.fixture
def real_containers(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The orchestration issue's stand-in project and a Celery worker, or a printed skip."""
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
    from orchestration.worker_process import start_worker

    missing = missing_tools()
    reason = ""
    if missing:
        reason = f"podman not installed: {INSTALL_HINT} (missing: {', '.join(missing)})"
    elif connection.vendor != "postgresql":
        reason = "a real apply needs a worker process sharing the database: run on PostgreSQL"
    if reason:
        print(f"\nreal-container apply skipped: {reason}")
        pytest.skip(reason)
    import redis

    from config.celery import app as celery_app

    broker = os.environ.get("GPUCONFIG_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(broker, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        print(f"\nreal-container apply skipped: Redis unreachable at {broker}")
        pytest.skip(f"Redis is not reachable at {broker} ({exc}); start redis-server")
    redis.Redis.from_url(broker).flushdb()
    previous_broker = celery_app.conf.broker_url
    celery_app.conf.broker_url = broker
    celery_app.close()

    for folder in ("podman-conf", "image", "stand"):
        (tmp_path / folder).mkdir()
    env = podman_environment(tmp_path / "podman-conf")
    image = ensure_standin_image(env, tmp_path / "image")
    compose_command = (str(Path(sys.executable).parent / "podman-compose"),)
    project = ComposeProject(tmp_path / "stand", new_project_name(), compose_command, env)
    project.write_base(standin_compose(image))
    monkeypatch.setenv("CONTAINERS_CONF", env["CONTAINERS_CONF"])
    settings.GPUCONFIG_COMPOSE_FILE = project.base
    settings.GPUCONFIG_OUTPUT_DIR = project.directory / "config"
    settings.GPUCONFIG_COMPOSE_PROJECT = project.name
    settings.GPUCONFIG_COMPOSE_COMMAND = list(compose_command)
    settings.GPUCONFIG_HEALTH_TIMEOUT_SECONDS = 20
    forget_probe()
    worker = None
    with installed_cdi_spec():
        try:
            project.start()
            db = connection.settings_dict
            worker = start_worker(
                {
                    **os.environ,
                    "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
                    "CELERY_BROKER_URL": broker,
                    "GPUCONFIG_COMPOSE_FILE": str(project.base),
                    "GPUCONFIG_OUTPUT_DIR": str(settings.GPUCONFIG_OUTPUT_DIR),
                    "GPUCONFIG_COMPOSE_PROJECT": project.name,
                    "GPUCONFIG_COMPOSE_COMMAND": ",".join(compose_command),
                    "GPUCONFIG_HEALTH_TIMEOUT_SECONDS": "20",
                    "GPUCONFIG_DATA_DIR": str(tmp_path / "worker-data"),
                },
                tmp_path / "worker.log",
            )
            yield SimpleNamespace(project=project, worker=worker)
        finally:
            if worker is not None:
                worker.stop()
            project.remove()
            forget_probe()
            celery_app.conf.broker_url = previous_broker
            celery_app.close()


def test_apply_restarts_the_services_and_shows_progress_to_the_end(
    real_containers, new_page, staff_user, screenshot
):
    _manual_design(staff_user)
    page = new_page(user=staff_user)
    page.on("dialog", lambda dialog: dialog.accept())  # Apply and Rollback ask first
    page.goto("/settings/gpu/")
    page.get_by_role("button", name="Apply & Restart Services").click()
    expect(page.locator("#gpu-form .notice.success")).to_contain_text(
        "Applying version 1: one podman-compose command recreates the changed services"
    )
    run = page.locator("#apply-run")
    expect(run).to_contain_text("Apply of version 1")
    for service in ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment"):
        expect(run.locator("table.steps")).to_contain_text(service)
    expect(run.locator(".run-state")).to_have_text(FINAL_LABELS, timeout=120_000)
    assert run.locator(".run-state").inner_text() == "Succeeded", (
        run.inner_text(),
        real_containers.worker.output()[-3000:],
    )
    expect(page.locator("#status-line")).to_contain_text("All services running as applied")
    expect(page.locator("#version-1")).not_to_contain_text("no")  # applied: a time, not "no"
    screenshot(page, "apply-succeeded")

    # Move CLIP to the A400 and apply (the change is saved first), then undo it by hand.
    page.locator("#gpu-ai-clip").select_option("1")
    expect(page.locator("#row-ai-clip")).to_contain_text("GPU 0 → GPU 1")
    page.get_by_role("button", name="Apply & Restart Services").click()
    expect(page.locator("#gpu-form .notice.success")).to_contain_text("Saved as version 2")
    expect(run).to_contain_text("Apply of version 2")
    expect(run.locator(".run-state")).to_have_text("Succeeded", timeout=120_000)
    expect(run.locator("table.steps")).to_contain_text("GPU 0 → GPU 1")
    page.get_by_role("button", name="Roll back to version 1").click()
    expect(page.locator("#apply-status .notice.success")).to_contain_text("Rolling back")
    expect(run).to_contain_text("Manual rollback to version 1")
    expect(run.locator(".run-state")).to_have_text("Succeeded", timeout=120_000)
    expect(run.locator("table.steps")).to_contain_text("GPU 1 → GPU 0")
    expect(page.locator("#gpu-ai-clip")).to_have_value("0")  # the form shows version 3
    screenshot(page, "rollback-succeeded")
    assert page.js_errors == []


def test_with_no_gpus_every_control_is_disabled(
    new_page, staff_user, settings, tmp_path, screenshot
):
    empty = tmp_path / "none.json"
    empty.write_text('{"gpus": []}')
    settings.GPUCONFIG_SIMULATED_GPUS = empty
    reset_sampler()
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    expect(page.locator("#gpu-cards")).to_contain_text("No GPUs detected")
    controls = page.locator("#gpu-form").locator("input:not([type=hidden]), select, button")
    assert controls.count() > 10
    for i in range(controls.count()):
        expect(controls.nth(i)).to_be_disabled()
    screenshot(page, "no-gpus")


def test_a_non_staff_user_sees_the_page_read_only(new_page, member_user, screenshot):
    page = new_page(user=member_user)
    page.goto("/settings/gpu/")
    expect(page.locator("#read-only-note")).to_contain_text("read-only access")
    expect(page.locator("#gpu-ai-llm")).to_be_disabled()
    expect(page.locator("#strategy-balanced")).to_be_disabled()
    expect(page.get_by_role("button", name="Save", exact=True)).to_be_disabled()
    expect(page.get_by_role("button", name="Apply & Restart Services")).to_be_disabled()
    expect(page.locator("#gpu-cards")).to_contain_text("GPU 1: NVIDIA RTX A400")
    screenshot(page, "read-only")
    # Past the disabled controls, the view itself refuses, and the page says so in words.
    page.evaluate(
        "htmx.ajax('POST', '/settings/gpu/', {target: '#gpu-form', values: {action: 'save'}})"
    )
    expect(page.locator("#page-alert")).to_contain_text(
        "Only staff users may change the GPU configuration."
    )
    assert ConfigVersion.objects.count() == 0
    page.set_viewport_size(PHONE)
    page.goto("/settings/gpu/")
    expect(page.locator("#gpu-ai-enrichment")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width}px)"
    screenshot(page, "phone")
    # When the session ends, the next poll says so instead of pasting a login form in place.
    page.context.clear_cookies()
    expect(page.locator("#page-alert")).to_contain_text("Your session has ended", timeout=10_000)
    expect(page.locator("#gpu-cards")).to_contain_text("GPU 1: NVIDIA RTX A400")


def test_without_javascript_the_form_posts_and_the_page_re_renders(
    new_page, staff_user, screenshot
):
    page = new_page(user=staff_user, javascript=False)
    page.goto("/settings/gpu/")
    page.locator("#strategy-balanced").check()
    page.get_by_role("button", name="Preview Changes").click()
    expect(page.locator("#gpu-ai-enrichment option:checked")).to_have_text("Auto (GPU 0)")
    expect(page.locator("#diff")).to_contain_text("Nothing saved yet")
    page.locator("#gpu-ai-enrichment").select_option("1")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".notice.success")).to_contain_text("Saved as version 1")
    expect(page.locator("#gpu-ai-enrichment")).to_have_value("1")
    # Beside YOLO on the A400: 4094 - 650 - 512 = 2932 MiB, 2.8 GiB in whole tenths.
    expect(page.locator("#budget-ai-enrichment")).to_have_value("2.8")
    version = ConfigVersion.objects.get()
    assert (version.strategy, version.assignments["ai-enrichment"]["gpu_index"]) == ("balanced", 1)


def test_the_system_tab_saves_settings_with_validation(new_page, staff_user, screenshot):
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    page.get_by_role("navigation", name="Settings").get_by_role("link", name="System").click()
    expect(page).to_have_url(re.compile(r"/settings/system/$"))
    page.get_by_label("VRAM reserve (MiB)").fill("-5")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#system-form")).to_contain_text("must be between 0 and 65536 MiB, got -5")
    page.get_by_label("VRAM reserve (MiB)").fill("1024")
    page.get_by_label("GPU card refresh (seconds)").fill("5")
    page.get_by_role("button", name="Save settings").click()
    saved = page.locator("#system-form .notice.success")
    expect(saved).to_contain_text("Saved: VRAM reserve (MiB)")
    screenshot(page, "settings-system")
    page.get_by_role("link", name="GPU Configuration").click()
    expect(page.locator("#gpu-cards")).to_contain_text("Refreshes every 5 s")
    assert page.js_errors == []


def test_a_stack_started_without_the_override_shows_drift_and_apply_repairs_it(
    real_containers, new_page, staff_user
):
    _manual_design(staff_user)
    page = new_page(user=staff_user)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto("/settings/gpu/")
    page.get_by_role("button", name="Apply & Restart Services").click()
    run = page.locator("#apply-run")
    expect(run.locator(".run-state")).to_have_text(FINAL_LABELS, timeout=120_000)
    assert run.locator(".run-state").inner_text() == "Succeeded", run.inner_text()

    # A reboot or a colleague: the project's own `down` and `up -d`, without the override.
    real_containers.project.compose("down", "-t", "0")
    real_containers.project.compose("up", "-d")
    reset_container_health_cache()  # the shared read's interval, passed
    page.goto("/settings/gpu/")

    drift = page.locator("#drift-notice")
    expect(drift).to_contain_text("5 services do not run as version 1 says")
    expect(drift).to_contain_text("ai-llm: runs without any GPU device")
    expect(page.locator("#status-line")).not_to_contain_text("All services running")
    expect(page.locator("#status-line")).to_contain_text("ai-llm drifted")
    containers = page.locator("#containers-now")
    expect(containers).to_have_attribute("open", "")
    expect(containers.locator("tr[data-service=ai-enrichment]")).to_contain_text("none")
    expect(containers.locator("tr[data-service=ai-enrichment]")).to_contain_text("Drifted")
    # In the assignment table, "Running on" beside the GPU planned.
    expect(page.locator("#gpu-ai-enrichment option:checked")).to_have_text(re.compile("GPU 1"))
    expect(page.locator("#running-ai-enrichment")).to_have_text("no GPU Drifted")

    # The same Apply repairs it: the version did not change, what runs did.
    first_run = run.get_attribute("data-run-id")
    page.get_by_role("button", name="Apply & Restart Services").click()
    expect(run).not_to_have_attribute("data-run-id", first_run or "")
    expect(run).to_contain_text("Apply of version 1")
    expect(run.locator(".run-state")).to_have_text(FINAL_LABELS, timeout=120_000)
    assert run.locator(".run-state").inner_text() == "Succeeded", run.inner_text()
    for service in ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment"):
        expect(run.locator("table.steps")).to_contain_text(service)
    expect(run.locator("table.steps")).to_contain_text("none → GPU 1")
    expect(page.locator("#status-line")).to_contain_text("All services running as applied")
    expect(page.locator("#drift-notice")).to_have_count(0)
    page.goto("/settings/gpu/")
    expect(page.locator("#running-ai-enrichment")).to_have_text("GPU 1")
    expect(page.locator("#running-ai-llm")).to_have_text("GPU 0")
