"""What a new user tripped over on the Settings pages (issue 11), each in a real Chromium.

The numbers in the test names are the issue's items. None of these tests needs podman: runs
are rows written here, as a worker would have left them.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from devices.services import gpu_inventory_rescan
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import AssignmentChange, gpu_config_restore, gpu_config_save
from orchestration import selectors as run_selectors
from orchestration.models import ApplyRun, RunKind, RunStatus, ServiceStep, StepStatus
from orchestration.services import forget_probe

pytestmark = pytest.mark.browser

SERVICES = ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment")


@pytest.fixture(autouse=True)
def _inventory(transactional_db: Any) -> None:
    gpu_inventory_rescan()
    forget_probe()


def _refused_when_pressed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page draws Apply enabled, and the server then refuses it (503, no podman-compose
    here): as when podman goes away after the page was drawn. These tests are about what
    happens around a press, which a missing podman no longer allows (issue 16)."""
    monkeypatch.setattr(run_selectors, "apply_readiness", lambda: (True, ""))


def _save(user: Any, strategy: StrategyName = StrategyName.MANUAL, **pins: int) -> ConfigVersion:
    changes = [AssignmentChange(service=s.replace("_", "-"), gpu_index=g) for s, g in pins.items()]
    return gpu_config_save(user=user, strategy=strategy, changes=changes).version


def _all_on_gpu0(user: Any, **moves: int) -> ConfigVersion:
    pins = {s.replace("-", "_"): 0 for s in SERVICES}
    pins.update(moves)
    return _save(user, StrategyName.MANUAL, **pins)


def _applied(version: ConfigVersion, minutes_ago: int) -> ConfigVersion:
    version.applied_at = timezone.now() - timedelta(minutes=minutes_ago)
    version.save(update_fields=["applied_at"])
    return version


def _run(
    version: ConfigVersion,
    status: RunStatus,
    *,
    kind: RunKind = RunKind.APPLY,
    previous: ConfigVersion | None = None,
    steps: dict[str, StepStatus] | None = None,
    error: str = "",
) -> ApplyRun:
    now = timezone.now()
    active = status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.ROLLING_BACK)
    run = ApplyRun.objects.create(
        kind=kind,
        status=status,
        version=version,
        previous_version=previous,
        started_at=now,
        heartbeat_at=now,
        finished_at=None if active else now,
        error=error,
    )
    for service, step in (steps or {}).items():
        ServiceStep.objects.create(run=run, service_name=service, status=step, from_gpu=0, to_gpu=1)
    return run


# --- 1. errors render in place, whatever DEBUG says ------------------------------------------


def test_1_errors_render_in_place_with_debug_on(new_page, staff_user, settings):
    settings.DEBUG = True  # as under bin/run
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    # A fresh database: choose Manual. (Saving it is no longer refused: item 2.)
    page.locator("#strategy-manual").check()
    expect(page.locator("input[name=table_strategy]")).to_have_value("manual")

    # The budget field carries the server's bounds, and a value outside them is answered
    # beside the field (the browser does not swallow it silently).
    budget = page.locator("#budget-ai-enrichment")
    # A text field (issue 17: a number input misread "3,5"); its hint gives the bounds.
    expect(page.locator("#budget-ai-enrichment-hint")).to_contain_text("0.1 to 2000")
    budget.fill("0")
    budget.press("Tab")
    expect(page.locator("#notes-ai-enrichment")).to_contain_text("VRAM budget")
    # Nobody pressed Save yet: nothing is said about saving (issue 16).
    expect(page.locator("#gpu-form .notice.error")).not_to_contain_text("saved")
    expect(page.get_by_role("heading", name="Detected GPUs")).to_be_visible()
    # Save answers 400, in place (the value typed again, without a change event).
    budget.evaluate("el => { el.value = '0'; }")
    with page.expect_response(
        lambda r: r.request.method == "POST" and "/gpu/save/" in r.url
    ) as answer:
        page.get_by_role("button", name="Save", exact=True).click()
    assert answer.value.status == 400
    page.wait_for_load_state()
    expect(page.locator("#gpu-form .notice.error", has_text="Nothing was saved")).to_be_visible()
    expect(page.locator("#notes-ai-enrichment")).to_contain_text("VRAM budget")
    expect(page.get_by_role("heading", name="Detected GPUs")).to_be_visible()
    expect(page.get_by_role("heading", name="Version history")).to_be_visible()
    assert ConfigVersion.objects.count() == 0

    page.get_by_role("navigation", name="Settings").get_by_role("link", name="System").click()
    polling = page.get_by_label("Apply status polling (seconds)")
    expect(polling).to_have_attribute("min", "1")
    expect(polling).to_have_attribute("max", "60")
    expect(page.get_by_label("GPU card refresh (seconds)")).to_have_attribute("max", "300")
    expect(page.get_by_label("VRAM reserve (MiB)")).to_have_attribute("max", "65536")
    polling.fill("0")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#system-form .field-error")).to_contain_text(
        "must be between 1 and 60 seconds, got 0"
    )
    expect(page.get_by_role("navigation", name="Settings")).to_be_visible()
    assert page.js_errors == []


# --- 2. Manual starts from the plan on screen ---------------------------------------------


def test_2_switching_to_manual_starts_from_the_plan_on_screen(new_page, staff_user):
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    # A fresh install: look at Latency-optimized's plan, then switch to Manual.
    page.locator("input[name=strategy][value=latency_optimized]").check()
    expect(page.locator("input[name=table_strategy]")).to_have_value("latency_optimized")
    page.locator("#strategy-manual").check()
    expect(page.locator("input[name=table_strategy]")).to_have_value("manual")
    shown = {"ai-llm": "0", "ai-yolo26": "0", "ai-enrichment": "1", "ai-florence": "0"}
    shown["ai-clip"] = "1"
    for service, gpu in shown.items():
        expect(page.locator(f"#gpu-{service}")).to_have_value(gpu)
    expect(page.locator("#gpu-form option", has_text="Choose a GPU")).to_have_count(0)
    with page.expect_response(
        lambda r: r.request.method == "POST" and "/gpu/save/" in r.url
    ) as answer:
        page.get_by_role("button", name="Save", exact=True).click()
    assert answer.value.status == 200
    version = ConfigVersion.objects.get()
    assert version.strategy == StrategyName.MANUAL
    saved = {service: a["gpu_index"] for service, a in version.assignments.items()}
    assert saved == {service: int(gpu) for service, gpu in shown.items()}
    assert page.js_errors == []


# --- 3. "Recommended" goes to a plan that fits ----------------------------------------------


def test_3_the_recommended_strategy_fits_on_the_gpus_at_hand(new_page, staff_user):
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    marked = page.locator("label.strategy", has=page.locator(".badge", has_text="Recommended"))
    expect(marked).to_have_count(1)
    marked.locator("input[type=radio]").check()
    expect(marked.locator("input[type=radio]")).to_be_checked()
    value = marked.locator("input[type=radio]").get_attribute("value")
    expect(page.locator("input[name=table_strategy]")).to_have_value(value or "")
    # Its own plan keeps every GPU within capacity on the reference GPUs.
    expect(page.locator("ul.planned li")).to_have_count(2)
    expect(page.locator("ul.planned")).not_to_contain_text("Over capacity")
    expect(page.locator("#warnings")).not_to_contain_text("could not be placed")
    assert page.js_errors == []


# --- 8. one unit, one divisor -----------------------------------------------------------------


def test_8_a_plan_that_fits_never_reads_as_more_than_the_gpu_holds(new_page, staff_user):
    # VRAM-based puts the LLM, Florence and CLIP on the A5500: 24,400 of its 24,564 MiB. With
    # the card's size printed as the size on the box (24564 / 1024 = "24 GB") beside loads
    # divided by 1000, that read "24.4 GB of 24 GB" next to no warning. Both in GiB (issue
    # 18): 23.8 of 24.0.
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    page.locator("input[name=strategy][value=vram_based]").check()
    planned = page.locator("ul.planned li").first
    expect(planned).to_contain_text("23.8 GiB of 24.0 GiB")
    expect(planned).not_to_contain_text("Over capacity")
    expect(page.locator("#gpu-cards")).to_contain_text("18.9/24.0 GiB")
    for text in page.locator("ul.planned li").all_inner_texts():
        used, total = (
            float(x) * (1024 if unit == "GiB" else 1)
            for x, unit in re.findall(r"([0-9.]+) (GiB|MiB)", text)[:2]
        )
        assert ("Over capacity" in text) == (used > total), text
    assert page.js_errors == []


# --- 6. after an automatic rollback, what runs and what to do with the failed version ------


def test_6_after_an_automatic_rollback_the_failed_version_can_be_discarded(new_page, staff_user):
    running = _applied(_all_on_gpu0(staff_user), minutes_ago=30)
    # CLIP pinned to GPU 1 and applied: the check failed and the apply rolled back.
    failed = _all_on_gpu0(staff_user, ai_clip=1)
    _run(failed, RunStatus.ROLLED_BACK, previous=running, steps={"ai-clip": StepStatus.ROLLED_BACK})
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    notice = page.locator("#failed-apply")
    expect(notice).to_contain_text(
        f"Version {failed.number} was rolled back automatically when it was applied: "
        f"version {running.number} is running."
    )
    expect(notice).to_contain_text(f"runs version {failed.number} again")
    # Apply says what it would do before running the known-bad version again.
    apply = page.get_by_role("button", name="Apply & Restart Services")
    expect(apply).to_have_attribute(
        "data-confirm", re.compile(f"Apply version {failed.number} again anyway")
    )
    questions: list[str] = []

    def dismiss(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    apply.click()
    page.wait_for_timeout(300)
    assert questions and "rolled back automatically" in questions[0], questions
    assert ApplyRun.objects.count() == 1, "nothing re-ran"

    # Discard: the running version is saved again as the newest, and the form shows it.
    with page.expect_response(lambda r: "/gpu/discard/" in r.url) as answer:
        page.get_by_role("button", name=f"Discard version {failed.number}").click()
    assert answer.value.status == 200
    restored = ConfigVersion.objects.order_by("-number").first()
    assert restored is not None and restored.number == failed.number + 1
    assert restored.assignments == running.assignments
    expect(page.locator("#gpu-form .notice.success")).to_contain_text(
        f"Version {failed.number} discarded"
    )
    expect(page.locator("#gpu-ai-clip")).to_have_value("0")
    expect(page.locator("#failed-apply")).to_have_count(0)
    expect(page.locator("#history")).to_contain_text(f"{restored.number} current")
    assert page.js_errors == []


# --- 7. no rollback button when there is nothing to roll back to ----------------------------


def test_7_no_rollback_is_offered_when_nothing_was_applied_before(new_page, staff_user):
    # The very first apply failed: nothing was ever applied.
    first = _all_on_gpu0(staff_user)
    _run(first, RunStatus.FAILED, error="podman-compose up failed: image not known")
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    expect(page.locator("#apply-run")).to_contain_text("The apply failed.")
    expect(page.get_by_role("button", name=re.compile("Roll back"))).to_have_count(0)

    # Once two versions were applied, the rollback is offered and names where it goes.
    _applied(first, minutes_ago=10)
    second = _applied(_all_on_gpu0(staff_user, ai_clip=1), minutes_ago=5)
    _run(second, RunStatus.SUCCEEDED, previous=first)
    page.reload()
    expect(page.get_by_role("button", name="Roll back to version 1")).to_be_visible()


# --- 10. focus stays on the pressed control; results are announced --------------------------


def test_10_focus_stays_on_the_pressed_button_and_results_are_announced(
    new_page, staff_user, settings, monkeypatch
):
    settings.GPUCONFIG_COMPOSE_COMMAND = ["/nonexistent/podman-compose"]
    _refused_when_pressed(monkeypatch)
    page = new_page(user=staff_user)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto("/settings/gpu/")
    announcer = page.locator("#form-announcer")
    expect(announcer).to_have_attribute("aria-live", "polite")

    preview = page.get_by_role("button", name="Preview Changes")
    preview.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#diff")).to_contain_text("Nothing saved yet")
    expect(preview).to_be_focused()
    expect(announcer).to_contain_text("Preview")

    save = page.get_by_role("button", name="Save", exact=True)
    save.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#gpu-form .notice.success")).to_contain_text("Saved as version 1")
    expect(save).to_be_focused()
    expect(announcer).to_contain_text("Saved as version 1")

    apply = page.get_by_role("button", name="Apply & Restart Services")
    apply.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#gpu-form .notice.error")).to_contain_text("Cannot apply")
    expect(apply).to_be_focused()
    expect(announcer).to_contain_text("Cannot apply")

    # With focus still on Apply, a change elsewhere re-validates the form; it never applies.
    with page.expect_request(lambda r: r.method == "POST") as changed:
        page.locator("#gpu-ai-clip").select_option("off")
    assert "action=apply" not in (changed.value.post_data or ""), changed.value.post_data
    expect(page.locator("#gpu-form .notice.error")).to_have_count(0)
    assert page.js_errors == []


# --- 11. guards on Apply and Rollback, and what the run says --------------------------------


def test_11_apply_asks_for_confirmation_first(new_page, staff_user, settings, monkeypatch):
    settings.GPUCONFIG_COMPOSE_COMMAND = ["/nonexistent/podman-compose"]
    _refused_when_pressed(monkeypatch)
    _all_on_gpu0(staff_user)
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    questions: list[str] = []

    def dismiss(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.once("dialog", dismiss)
    page.get_by_role("button", name="Apply & Restart Services").click()
    page.wait_for_timeout(500)
    assert posts == [], "nothing is sent when the question is dismissed"
    assert questions and "restart" in questions[0].lower(), questions
    expect(page.locator("#gpu-form .notice")).to_have_count(0)

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Apply & Restart Services").click()
    expect(page.locator("#gpu-form .notice.error")).to_contain_text("Cannot apply")


def test_11_rollback_asks_for_confirmation_first(new_page, staff_user):
    first = _applied(_all_on_gpu0(staff_user), minutes_ago=10)
    second = _applied(_all_on_gpu0(staff_user, ai_clip=1), minutes_ago=5)
    _run(second, RunStatus.SUCCEEDED, previous=first)
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    questions: list[str] = []

    def dismiss(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.get_by_role("button", name="Roll back to version 1").click()
    page.wait_for_timeout(500)
    assert questions and "version 1" in questions[0], questions
    assert ApplyRun.objects.count() == 1 and ConfigVersion.objects.count() == 2


def test_11_without_javascript_apply_and_rollback_ask_on_the_page_first(
    new_page, staff_user, settings, monkeypatch
):
    settings.GPUCONFIG_COMPOSE_COMMAND = ["/nonexistent/podman-compose"]
    _refused_when_pressed(monkeypatch)
    first = _applied(_all_on_gpu0(staff_user), minutes_ago=10)
    second = _applied(_all_on_gpu0(staff_user, ai_clip=1), minutes_ago=5)
    _run(second, RunStatus.SUCCEEDED, previous=first)
    page = new_page(user=staff_user, javascript=False)
    page.goto("/settings/gpu/")

    page.get_by_role("button", name="Roll back to version 1").click()
    expect(page.locator("#rollback-confirm")).to_contain_text("Roll back to version 1?")
    assert ConfigVersion.objects.count() == 2, "the first press only asks"
    page.get_by_role("button", name="Yes, roll back to version 1").click()
    # Asked and answered: the server tries (and says why it cannot run here).
    expect(page.locator("#apply-status .notice.error")).to_contain_text("Cannot")

    page.locator("#gpu-ai-clip").select_option("0")
    page.get_by_role("button", name="Apply & Restart Services").click()
    expect(page.locator("#apply-confirm")).to_contain_text("Apply the configuration on screen now?")
    expect(page.locator("#diff")).to_contain_text("ai-clip: GPU 1 → GPU 0")
    expect(page.locator("#gpu-ai-clip")).to_have_value("0")  # the choice is kept
    assert ConfigVersion.objects.count() == 2 and ApplyRun.objects.count() == 1
    page.get_by_role("button", name="Yes, apply & restart").click()
    expect(page.locator("#gpu-form .notice.error")).to_contain_text("Cannot apply")


def test_11_while_a_run_is_active_apply_and_rollback_are_disabled(new_page, staff_user):
    first = _applied(_all_on_gpu0(staff_user), minutes_ago=10)
    second = _all_on_gpu0(staff_user, ai_clip=1)
    _run(
        second,
        RunStatus.RUNNING,
        previous=first,
        steps={"ai-clip": StepStatus.RECREATING, "ai-llm": StepStatus.RECREATING},
    )
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    apply = page.get_by_role("button", name="Apply & Restart Services")
    expect(apply).to_have_attribute("aria-disabled", "true")
    expect(page.locator("#gpu-form")).to_contain_text("An apply is running")
    expect(page.get_by_role("button", name=re.compile("Roll back"))).to_have_count(0)
    # One podman-compose command recreates them all: no "0 of 2 done" while it runs.
    expect(page.locator("#apply-run .run-summary")).to_contain_text(
        "Recreating 2 services with one podman-compose command"
    )
    # It keeps keyboard focus, but pressing it sends nothing.
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    apply.focus()
    expect(apply).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)
    assert posts == []

    # Steps finish one by one: the count follows them.
    ServiceStep.objects.filter(service_name="ai-llm").update(status=StepStatus.HEALTHY)
    ServiceStep.objects.filter(service_name="ai-clip").update(status=StepStatus.VERIFYING)
    page.reload()
    expect(page.locator("#apply-run .run-summary")).to_contain_text("1 of 2 checked")


def test_11_a_rollback_names_the_version_it_goes_back_to(new_page, staff_user):
    first = _applied(_all_on_gpu0(staff_user), minutes_ago=10)
    second = _applied(_all_on_gpu0(staff_user, ai_clip=1), minutes_ago=5)
    restored = gpu_config_restore(version=first, user=staff_user)
    _run(restored, RunStatus.SUCCEEDED, kind=RunKind.ROLLBACK, previous=second)
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    heading = page.locator("#apply-run h3")
    expect(heading).to_contain_text("Manual rollback to version 1")
    expect(heading).not_to_contain_text("of version 3")


# --- 12. small things ---------------------------------------------------------------------


def test_12_gpu_cards_say_which_services_each_gpu_will_hold(new_page, staff_user):
    _all_on_gpu0(staff_user)
    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    gpu0 = page.locator("#gpu-0-holds")
    gpu1 = page.locator("#gpu-1-holds")
    expect(gpu0).to_contain_text("ai-enrichment")
    expect(gpu1).to_contain_text("No managed service")
    # The plan on screen, before saving: move the zoo to GPU 1.
    page.locator("#gpu-ai-enrichment").select_option("1")
    expect(gpu1).to_contain_text("ai-enrichment")
    expect(gpu0).not_to_contain_text("ai-enrichment")
    expect(gpu0).to_contain_text("ai-llm")
    # The cards' own refresh keeps it.
    with page.expect_response(lambda r: "part=gpu-cards" in r.url, timeout=10_000):
        pass
    page.wait_for_timeout(200)
    expect(gpu1).to_contain_text("ai-enrichment")
    assert page.js_errors == []


def test_12_favicon_and_the_browsable_api(new_page, staff_user):
    anonymous = new_page()
    favicon = anonymous.request.get("/favicon.ico")
    assert favicon.status == 200, favicon.status
    assert favicon.headers["content-type"].startswith("image/")

    page = new_page(user=staff_user)
    page.goto("/settings/gpu/")
    expect(page.locator("head link[rel=icon]")).to_have_count(1)
    icon = page.locator("head link[rel=icon]").get_attribute("href") or ""
    assert page.request.get(icon).status == 200

    response = page.goto("/api/")
    assert response is not None and response.status == 200
    expect(page.locator("body")).to_contain_text("/api/system/gpu-config")
    page.goto("/api/system/gpu-config")
    raw = page.locator("#id__content")
    expect(raw).to_have_value(re.compile(r'"strategy": "manual"'))
    expect(raw).to_have_value(re.compile(r'"vram_budget_override": 3.5'))
    page.get_by_role("link", name="GPU Config").first.click()
    expect(page).to_have_url(re.compile(r"/settings/gpu/$"))


# --- 9. one source of truth for the strategy in force ---------------------------------------


def test_9_the_default_strategy_is_the_one_in_force_until_the_first_save(
    new_page, staff_user, screenshot
):
    page = new_page(user=staff_user)
    page.goto("/settings/system/")
    page.get_by_label("Default strategy").select_option("balanced")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#system-form .notice.success")).to_contain_text("Default strategy")
    page.get_by_role("link", name="GPU Configuration").click()
    expect(page.locator("#strategy-balanced")).to_be_checked()
    expect(page.locator("#unsaved-badge")).to_have_text("Not saved yet")

    page.locator("#strategy-latency_optimized").check()
    expect(page.locator("input[name=table_strategy]")).to_have_value("latency_optimized")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#gpu-form .notice.success")).to_contain_text("Saved as version 1")

    page.get_by_role("navigation", name="Settings").get_by_role("link", name="System").click()
    # After the first save the saved configuration decides: the System tab says which, and
    # offers no second place to change it.
    expect(page.get_by_label("Default strategy")).to_have_count(0)
    expect(page.locator("#strategy-in-force")).to_contain_text("Latency-optimized")
    expect(page.locator("#strategy-in-force")).to_contain_text("version 1")
    screenshot(page, "settings-system-strategy-in-force")
    page.get_by_label("GPU card refresh (seconds)").fill("4")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#system-form .notice.success")).to_contain_text("GPU card refresh")
    page.get_by_role("navigation", name="Settings").get_by_role(
        "link", name="GPU Configuration"
    ).click()
    expect(page.locator("#strategy-latency_optimized")).to_be_checked()
    assert page.js_errors == []
