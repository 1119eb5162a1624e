"""The page never shows stale state, and Apply says whether it can work (issues 16 and 17),
each in a real Chromium. Every test here failed before its fix.

None of these tests needs podman to run: what they check is drawn before any container is
touched (a missing podman is made missing through PATH, for real).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from devices.services import gpu_inventory_rescan
from gpuconfig.backup import render_backup
from gpuconfig.backup_services import gpu_config_export
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.selectors import system_config
from gpuconfig.services import gpu_config_save, system_settings_update
from gpuconfig.system_settings import RESERVE_KEY, STATUS_POLL_KEY
from orchestration.services import forget_probe

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _inventory(transactional_db: Any) -> None:
    gpu_inventory_rescan()
    forget_probe()


# --- an import redraws the System settings above it ------------------------------------------


def test_an_import_redraws_the_settings_form_and_save_settings_keeps_the_import(
    new_page, staff_user, tmp_path: Path
):
    # The backup: status polling every 9 s, a 2048 MiB reserve. The host: 3 s and 512 MiB.
    gpu_config_save(user=staff_user, strategy=StrategyName.VRAM_BASED)
    system_settings_update(values={STATUS_POLL_KEY: 9, RESERVE_KEY: 2048})
    backup = tmp_path / "backup.yml"
    backup.write_text(render_backup(gpu_config_export()))
    system_settings_update(values={STATUS_POLL_KEY: 3, RESERVE_KEY: 512})

    page = new_page(user=staff_user)
    page.goto("/settings/system/")
    polling = page.get_by_label("Apply status polling (seconds)")
    reserve = page.get_by_label("VRAM reserve (MiB)")
    expect(polling).to_have_value("3")
    page.locator("#backup-file").set_input_files(str(backup))
    page.get_by_role("button", name="Import now").click()
    expect(page.locator("#backup")).to_contain_text("Imported as version 2")
    # The form above shows what is stored now, not what was there before the import.
    expect(polling).to_have_value("9")
    expect(reserve).to_have_value("2048")
    expect(page.locator("#strategy-in-force")).to_contain_text("from saved version 2")

    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#system-form .notice.success")).to_contain_text("Nothing changed")
    config = system_config()
    assert (config.status_poll_seconds, config.vram_reserve_mb) == (9, 2048), "import kept"
    assert page.js_errors == []


def test_save_settings_from_a_page_loaded_before_an_import_is_refused_not_applied(
    new_page, staff_user
):
    # Another tab (or another user) imports a backup after this page was drawn.
    page = new_page(user=staff_user)
    page.goto("/settings/system/")
    polling = page.get_by_label("Apply status polling (seconds)")
    expect(polling).to_have_value("1")
    system_settings_update(values={STATUS_POLL_KEY: 9, RESERVE_KEY: 2048})

    page.get_by_label("GPU card refresh (seconds)").fill("7")
    page.get_by_role("button", name="Save settings").click()
    notice = page.locator("#system-form .notice.error")
    expect(notice).to_contain_text("changed since this page was loaded")
    expect(notice).to_contain_text("Nothing was saved")
    # The form now shows what is stored; nothing of the old page was written over it.
    expect(polling).to_have_value("9")
    expect(page.get_by_label("VRAM reserve (MiB)")).to_have_value("2048")
    config = system_config()
    assert (config.status_poll_seconds, config.vram_reserve_mb) == (9, 2048)
    assert config.gpu_poll_seconds != 7
    # Saved again from the fresh form, it is taken.
    page.get_by_label("GPU card refresh (seconds)").fill("7")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#system-form .notice.success")).to_contain_text("Saved")
    assert system_config().gpu_poll_seconds == 7
    assert page.js_errors == []


# --- "Unsaved changes" compares like with like -----------------------------------------------


def test_a_fresh_load_after_a_manual_save_that_switched_a_service_off_is_not_unsaved(
    new_page, staff_user
):
    gpu_config_save(user=staff_user, strategy=StrategyName.VRAM_BASED)
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    expect(page.locator("#unsaved-badge")).to_have_count(0)
    page.locator("#strategy-manual").check()
    expect(page.locator("input[name=table_strategy]")).to_have_value("manual")
    with page.expect_response(lambda r: "/gpu/validate/" in r.url):
        page.locator("#gpu-ai-clip").select_option("off")
    expect(page.locator("#unsaved-badge")).to_have_text("Unsaved changes")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#gpu-form .notice.success")).to_contain_text("Saved as version 2")
    expect(page.locator("#unsaved-badge")).to_have_count(0)

    # Nothing edited since: a fresh load says so, and so does Preview.
    page.reload()
    expect(page.locator("#gpu-ai-clip")).to_have_value("off")
    expect(page.locator("#unsaved-badge")).to_have_count(0)
    expect(page.locator("#gpu-ai-clip ~ .badge, #row-ai-clip .badge.info")).to_have_count(0)
    page.get_by_role("button", name="Preview Changes").click()
    expect(page.locator("#diff")).to_contain_text("No service changes GPU or budget.")
    expect(page.locator("#diff")).not_to_contain_text("Saving records")
    expect(page.locator("#unsaved-badge")).to_have_count(0)
    assert page.js_errors == []


# --- a Save that changes nothing adds no version -----------------------------------------------


def test_a_save_that_changes_nothing_adds_no_version_and_says_so(new_page, staff_user):
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    save = page.get_by_role("button", name="Save", exact=True)
    save.click()
    expect(page.locator("#gpu-form .notice.success")).to_contain_text("Saved as version 1")
    expect(page.locator("#history tbody tr")).to_have_count(1)

    save.click()
    expect(page.locator("#gpu-form .notice")).to_contain_text(
        "Nothing changed: version 1 is already saved."
    )
    expect(page.locator("#gpu-form .notice")).not_to_contain_text("Saved as version")
    expect(page.locator("#history tbody tr")).to_have_count(1)
    expect(page.locator("#apply-status")).to_contain_text("Saved: version 1")
    assert ConfigVersion.objects.count() == 1
    assert page.js_errors == []


# --- warning counts come from one list -----------------------------------------------------------


def test_the_saved_message_counts_the_warnings_the_page_lists(new_page, staff_user):
    # Isolation-first on the reference GPUs cannot place everything within capacity: its
    # plan says so, and so does the check of the saved placement, in fewer words.
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    page.locator("#strategy-isolation_first").check()
    expect(page.locator("input[name=table_strategy]")).to_have_value("isolation_first")
    page.get_by_role("button", name="Save", exact=True).click()
    notice = page.locator("#gpu-form .notice.success")
    expect(notice).to_contain_text("Saved as version 1 with")
    listed = page.locator("#warnings li")
    count = int(re.search(r"with (\d+) warning", notice.inner_text())[1])  # type: ignore[index]
    expect(listed).to_have_count(count)
    # A fresh load lists the same warnings.
    page.reload()
    expect(page.locator("#warnings li")).to_have_count(count)
    assert page.js_errors == []


# --- a refused field keeps what was typed, and is marked ----------------------------------------


def test_a_refused_budget_keeps_the_rows_choices_and_marks_the_field(new_page, staff_user):
    gpu_config_save(user=staff_user, strategy=StrategyName.VRAM_BASED)
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    gpu = page.locator("#gpu-ai-enrichment")
    budget = page.locator("#budget-ai-enrichment")
    saved_budget = budget.input_value()
    with page.expect_response(lambda r: "/gpu/validate/" in r.url):
        gpu.select_option("0")
    with page.expect_response(lambda r: "/gpu/validate/" in r.url) as answer:
        budget.fill("0")
        budget.press("Tab")
    assert answer.value.status == 400
    # Every field of the row shows what the user chose and typed, not the saved values.
    expect(gpu).to_have_value("0")
    expect(budget).to_have_value("0")
    assert saved_budget != "0"
    # The refused field is marked, and its message is linked to it.
    expect(budget).to_have_attribute("aria-invalid", "true")
    described = (budget.get_attribute("aria-describedby") or "").split()
    message = page.locator("#budget-ai-enrichment-error")
    assert "budget-ai-enrichment-error" in described, described
    expect(message).to_contain_text("VRAM budget")
    expect(message).to_contain_text("0.1")
    expect(gpu).not_to_have_attribute("aria-invalid", "true")
    # Nobody pressed Save: nothing is said about saving.
    expect(page.locator("#gpu-form")).not_to_contain_text("saved:")
    expect(page.locator("#gpu-form")).not_to_contain_text("Nothing was saved")

    # Save is what says it.
    with page.expect_response(lambda r: "/gpu/save/" in r.url) as saved:
        page.get_by_role("button", name="Save", exact=True).click()
    assert saved.value.status == 400
    expect(page.locator("#gpu-form .notice.error")).to_contain_text("Nothing was saved")
    expect(gpu).to_have_value("0")
    expect(budget).to_have_value("0")
    assert ConfigVersion.objects.count() == 1
    assert page.js_errors == []


# --- numbers people type (issue 17) ------------------------------------------------------------


def _type_budget(page: Any, text: str) -> Any:
    """Type into the zoo's budget as a person does (key by key), then leave the field."""
    budget = page.locator("#budget-ai-enrichment")
    budget.click()
    budget.press("Control+a")
    budget.press("Delete")
    with page.expect_response(lambda r: "/gpu/validate/" in r.url) as answer:
        page.keyboard.type(text)
        budget.press("Tab")
    return answer.value


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("3,5", "Use a decimal point: 3.5"),
        ("1e3", "Type a plain number of GiB with a decimal point, such as 3.5"),
    ],
)
def test_a_budget_typed_with_a_comma_or_an_exponent_is_refused_not_misread(
    new_page, staff_user, typed, message
):
    gpu_config_save(user=staff_user, strategy=StrategyName.VRAM_BASED)
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    budget = page.locator("#budget-ai-enrichment")
    # The field says which numbers it takes.
    expect(page.locator("#budget-ai-enrichment-hint")).to_contain_text("decimal point")
    expect(budget).to_have_attribute("placeholder", "e.g. 3.5")

    answer = _type_budget(page, typed)
    assert answer.status == 400
    expect(budget).to_have_value(typed)
    expect(page.locator("#budget-ai-enrichment-error")).to_contain_text(message)
    expect(page.locator("#gpu-form")).not_to_contain_text("35 GiB")
    expect(page.locator("#gpu-form")).not_to_contain_text("1000 GiB")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#gpu-form .notice.error")).to_contain_text("Nothing was saved")
    assert ConfigVersion.objects.count() == 1
    row = ConfigVersion.objects.get().assignments["ai-enrichment"]
    assert row["vram_budget_override"] is None
    assert page.js_errors == []


def test_a_budget_typed_with_a_decimal_point_is_taken(new_page, staff_user):
    gpu_config_save(user=staff_user, strategy=StrategyName.VRAM_BASED)
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    answer = _type_budget(page, "3.5")
    assert answer.status == 200
    expect(page.locator("#budget-ai-enrichment")).to_have_value("3.5")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#gpu-form .notice.success")).to_contain_text("Saved as version 2")
    saved = ConfigVersion.objects.order_by("-number").first()
    assert saved is not None
    assert saved.assignments["ai-enrichment"]["vram_budget_override"] == 3.5
    assert page.js_errors == []


# --- Apply shows whether it can work before it is pressed ------------------------------------


@pytest.fixture
def podman_missing(settings, monkeypatch, tmp_path: Path) -> None:
    """podman is not on PATH (the app's own podman-compose is, by its absolute path): as on a
    host where podman was never installed. The probe runs for real and finds no podman."""
    compose = Path(settings.GPUCONFIG_COMPOSE_COMMAND[0])
    if not compose.is_absolute():
        pytest.skip(f"the compose command {compose} is not an absolute path")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    forget_probe()


def test_without_podman_apply_is_disabled_with_the_reason_for_everyone(
    new_page, staff_user, member_user, podman_missing
):
    gpu_config_save(user=staff_user, strategy=StrategyName.VRAM_BASED)
    dialogs: list[str] = []

    def answer(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    for user in (staff_user, member_user):
        page = new_page(user=user)
        page.on("dialog", answer)
        page.goto("/settings/gpu/")
        apply = page.get_by_role("button", name="Apply & Restart Services")
        expect(apply).to_be_disabled()
        note = page.locator("#apply-unready-note")
        expect(note).to_contain_text("Apply & Restart cannot work here: podman not found on PATH")
        expect(note).to_contain_text("apt-get install -y podman runc")  # on a host: install it
        expect(apply).to_have_attribute("aria-describedby", "apply-unready-note")
        apply.click(force=True)  # a disabled button does nothing, even when clicked
        page.wait_for_timeout(300)
        assert dialogs == [], "no dialog promises restarts"
        assert page.js_errors == []
    assert ConfigVersion.objects.count() == 1


def test_inside_the_stack_the_advice_is_the_podman_socket(
    new_page, staff_user, podman_missing, monkeypatch
):
    monkeypatch.setenv("CONTAINER_HOST", "unix:///run/podman/podman.sock")
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    note = page.locator("#apply-unready-note")
    expect(note).to_contain_text("mount the host's podman socket folder")
    expect(note).to_contain_text("CONTAINER_HOST")
    expect(note).not_to_contain_text("apt-get")
    expect(page.get_by_role("button", name="Apply & Restart Services")).to_be_disabled()
