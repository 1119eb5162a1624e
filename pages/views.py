"""HTML views: the Settings area (GPU Configuration, System) and the health endpoint.

One view and one template per tab serve the full page and each of its fragments
(``{% partialdef %}``): htmx asks for a fragment with ``?part=<name>``, and form posts answer
with the fragment they change (plus out-of-band fragments for the other regions they touch).
Without JavaScript the same form posts re-render the whole page, or redirect after a write.

Every view checks access itself: anyone logged in reads, only staff change anything, and a
POST from anyone else is refused here (403) whatever the template showed them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_safe
from django_htmx.middleware import HtmxDetails

from devices.presenters import measured_by_service
from devices.selectors import gpu_inventory_view
from gpuconfig import selectors
from gpuconfig.changes import config_changes
from gpuconfig.domain import (
    STRATEGY_LABELS,
    Configuration,
    ResolvedAssignment,
    StrategyName,
)
from gpuconfig.models import ConfigVersion
from gpuconfig.parsers import version_number
from gpuconfig.registry import RegistryError, load_registry
from gpuconfig.services import (
    AssignmentChange,
    ConfigConflict,
    ConfigFileError,
    ConfigInputError,
    Draft,
    gpu_config_draft,
    gpu_config_save,
    system_settings_update,
    validate_changes,
)
from orchestration.models import ACTIVE_RUN_STATUSES, ApplyRun, RunKind, RunStatus, StepStatus
from orchestration.selectors import apply_status
from orchestration.services import (
    ApplyRefused,
    apply_run_start,
    rollback_run_start,
)
from pages.forms import GpuConfigForm, SystemSettingsForm
from pages.presenters import (
    assignment_rows,
    described,
    gpu_cards,
    planned_per_gpu,
    strategy_options,
    warning_note,
)

logger = logging.getLogger(__name__)

SETTINGS_TEMPLATE = "pages/settings.html"
SYSTEM_TEMPLATE = "pages/system.html"
GPU_FRAGMENTS = ("gpu-cards", "config-form", "apply-status", "history", "version-diff")
HISTORY_LENGTH = 20
# Marks an answer the page may swap in even with an error status (see static/js/app.js).
FRAGMENT_HEADER = "X-GpuConfig-Fragment"
READ_ONLY = "Only staff users may change the GPU configuration."

View = Callable[..., HttpResponse]


class HtmxHttpRequest(HttpRequest):
    """What HtmxMiddleware gives every request (django-htmx's advice for type checking)."""

    htmx: HtmxDetails


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("pages:settings")


@login_not_required
@require_safe  # HEAD too: it is what load balancers send
def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and the run script: the database answers."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any database failure means "not healthy", whatever its type
        # The driver's text names hosts, users and databases: the log has it, callers (who
        # are anonymous, and whose session could not be read now anyway) learn only this.
        logger.error("health check: the database is unavailable: %s", exc)
        return JsonResponse({"status": "error", "database": "unavailable"}, status=503)
    return JsonResponse({"status": "ok"})


# --- helpers shared by both tabs -----------------------------------------------------------


def _can_edit(request: HtmxHttpRequest) -> bool:
    return bool(request.user.is_staff)


def _alert(request: HtmxHttpRequest, message: str, *, status: int) -> HttpResponse:
    """One sentence for the page's alert area (htmx requests that cannot answer a fragment)."""
    response = render(request, f"{SETTINGS_TEMPLATE}#alert", {"alert": message}, status=status)
    response[FRAGMENT_HEADER] = "alert"
    response["HX-Retarget"] = "#page-alert"
    response["HX-Reswap"] = "innerHTML"
    return response


def _readable_errors(view: View) -> View:
    """An unexpected error in an htmx request becomes a sentence in the page, not a blank
    area; full-page requests go on to Django's own error page (no traceback unless DEBUG)."""

    @functools.wraps(view)
    def wrapper(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except Exception as exc:
            if not request.htmx:
                raise
            logger.exception("settings view failed")
            return _alert(
                request,
                f"The server could not complete this request ({type(exc).__name__}). "
                "It has been logged. Reload the page to see the current state, then try again.",
                status=500,
            )

    return wrapper


def _fragments(
    request: HtmxHttpRequest,
    template: str,
    main: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    oob: Iterable[str] = (),
) -> HttpResponse:
    """Fragment ``main``, then out-of-band copies of the other regions it changed."""
    html = render_to_string(f"{template}#{main}", context, request)
    for part in oob:
        html += render_to_string(f"{template}#{part}", {**context, "oob": True}, request)
    response = HttpResponse(html, status=status)
    response[FRAGMENT_HEADER] = main
    return response


def _page(
    request: HtmxHttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ("HX-Request",))
    return response


# --- GPU Configuration tab -----------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@_readable_errors
def gpu_settings(request: HtmxHttpRequest) -> HttpResponse:
    """Settings > GPU Configuration: the page, its fragments and its form posts."""
    if request.method == "POST":
        if not _can_edit(request):
            return _refused(request)
        return _gpu_settings_post(request)
    part = request.GET.get("part", "")
    if part and request.htmx:
        if part not in GPU_FRAGMENTS:
            return _alert(request, f"Unknown part of the page: {part!r}.", status=400)
        return _gpu_fragment(request, part)
    return _page(request, SETTINGS_TEMPLATE, _full_context(request))


def _refused(request: HtmxHttpRequest) -> HttpResponse:
    if request.htmx:
        return _alert(request, READ_ONLY, status=403)
    context = _full_context(request, notices=[("error", READ_ONLY)])
    return _page(request, SETTINGS_TEMPLATE, context, status=403)


def _gpu_fragment(request: HtmxHttpRequest, part: str) -> HttpResponse:
    if part == "gpu-cards":
        context = _cards_context()
    elif part == "config-form":
        context = _config_context(request, _draft_or_error())
    elif part == "apply-status":
        context = _status_context(request, was_active=request.GET.get("was_active") == "1")
    else:  # history, version-diff
        context = _history_context(request)
    oob: list[str] = []
    if context.get("run_finished_now"):
        # The run just ended: the history's "Applied" column changed with it, and the
        # form's Apply button is enabled again.
        context.update(_history_context(request))
        oob.extend(["history", "form-actions"])
    return _fragments(request, SETTINGS_TEMPLATE, part, context, oob=oob)


def _full_context(
    request: HtmxHttpRequest, draft: Draft | str | None = None, **config: Any
) -> dict[str, Any]:
    return {
        "tab": "gpu",
        **_cards_context(),
        **_config_context(request, _draft_or_error() if draft is None else draft, **config),
        **_status_context(request),
        **_history_context(request),
    }


def _draft_or_error(**kwargs: Any) -> Draft | str:
    try:
        return gpu_config_draft(replan=False, **kwargs)
    except RegistryError as exc:
        return f"The compose file cannot be used: {exc}"


def _cards_context() -> dict[str, Any]:
    """The GPU cards: live readings from the shared sample (never NVML per request)."""
    inventory = gpu_inventory_view()
    cards = gpu_cards(inventory["gpus"])
    return {
        "inventory": inventory,
        "cards": cards,
        "any_present": any(card["present"] for card in cards),
        "gpu_poll_seconds": selectors.system_config().gpu_poll_seconds,
    }


def _config_context(
    request: HtmxHttpRequest,
    draft: Draft | str,
    *,
    form_version: int | None = None,
    errors: dict[str, list[str]] | None = None,
    notices: list[tuple[str, str]] | None = None,
    show_diff: bool = False,
    conflict: bool = False,
    confirm_apply: bool = False,
) -> dict[str, Any]:
    can_edit = _can_edit(request)
    if isinstance(draft, str):
        return {
            "config_error": draft,
            "can_edit": can_edit,
            "controls_disabled": True,
            "notices": notices or [],
        }
    no_gpus = not any(g.present for g in draft.gpus)
    saved = selectors.latest_version()
    return {
        "draft": draft,
        "can_edit": can_edit,
        "no_gpus": no_gpus,
        "controls_disabled": no_gpus or not can_edit,
        "strategies": strategy_options(
            draft.strategy, selectors.recommended_strategy(draft.gpus, draft.requests)
        ),
        "strategy_label": STRATEGY_LABELS[draft.strategy],
        "rows": assignment_rows(draft, errors=errors),
        "measured": measured_by_service(),  # the table's "Measured" column
        "planned": planned_per_gpu(draft),
        "warnings": [(w, warning_note(w)) for w in draft.warnings],
        "form_version": draft.saved_version if form_version is None else form_version,
        "unsaved": _unsaved(draft, saved),
        "saved_strategy_label": STRATEGY_LABELS[StrategyName(saved.strategy)] if saved else "",
        "show_diff": show_diff,
        "confirm_apply": confirm_apply,
        "diff": described(draft.changes),
        "notices": notices or [],
        "conflict": conflict,
        # Apply is shown disabled while a run is active (the server refuses it anyway).
        "run_active": _run_is_active(),
    }


def _run_is_active() -> bool:
    return ApplyRun.objects.filter(status__in=ACTIVE_RUN_STATUSES).exists()


def _unsaved(draft: Draft, saved: ConfigVersion | None) -> bool:
    """Whether Save would store something different from the newest saved version."""
    if saved is None or saved.strategy != draft.strategy or draft.changes:
        return True
    before = Configuration.from_json(saved.assignments)
    for entry in draft.configuration.assignments:
        old = before.get(entry.service) or ResolvedAssignment(entry.service, None)
        if (old.pinned, old.enabled, old.vram_budget_override) != (
            entry.pinned,
            entry.enabled,
            entry.vram_budget_override,
        ):
            return True
    return False


def _status_context(request: HtmxHttpRequest, *, was_active: bool = False) -> dict[str, Any]:
    """Apply progress and the containers now; polled while a run is active."""
    # Reads do not write: a run whose worker died is marked interrupted by the periodic
    # task orchestration.reap_stale_runs (Celery beat), within GPUCONFIG_STALE_RUN_SECONDS.
    status = apply_status()
    run = status["run"]
    active = bool(run and run["active"])
    steps = run["steps"] if run else []
    applied = selectors.latest_applied_version()
    latest = selectors.latest_version()
    if run:
        run = {
            **run,
            "kind_label": RunKind(run["kind"]).label,
            "status_label": RunStatus(run["status"]).label,
            "steps": [{**s, "status_label": StepStatus(s["status"]).label} for s in steps],
            # A rollback runs a copy of an older version: name the version it goes back to.
            "restores": (
                selectors.restored_from(run["version"]) if run["kind"] == RunKind.ROLLBACK else None
            ),
        }
    target = selectors.rollback_target() if run and not active else None
    return {
        "status": status,
        "run": run,
        "run_active": active,
        "run_finished_now": was_active and not active,
        **_step_progress(steps, active=active),
        "applied_version": applied.number if applied else None,
        "saved_version": latest.number if latest else None,
        "status_poll_seconds": selectors.system_config().status_poll_seconds,
        "can_edit": _can_edit(request),
        # Offered only when the server would accept it: an earlier applied version exists
        # (never after a first apply, failed or not), and the run did not roll back already.
        "rollback_target": target.number if target else None,
        "rollback_offered": bool(target and run and run["status"] != RunStatus.ROLLED_BACK),
    }


# Steps that finished, and how far each state is along the run (for the progress bar).
_STEP_DONE = (StepStatus.HEALTHY, StepStatus.FAILED, StepStatus.ROLLED_BACK)
_STEP_WEIGHT = {StepStatus.PENDING: 0.0, StepStatus.RECREATING: 0.25, StepStatus.VERIFYING: 0.5}


def _step_progress(steps: list[dict[str, Any]], *, active: bool) -> dict[str, Any]:
    """Counts for the run summary: one command recreates every changed service, then each
    is checked; a step counts as done when its check has finished."""
    done = sum(1 for s in steps if s["status"] in _STEP_DONE)
    recreating = not done and all(
        s["status"] in (StepStatus.PENDING, StepStatus.RECREATING) for s in steps
    )
    weight = sum(_STEP_WEIGHT.get(s["status"], 1.0) for s in steps)
    return {
        "steps_done": done,
        "steps_total": len(steps),
        "steps_recreating": bool(steps) and recreating,
        "steps_percent": round(100 * weight / len(steps)) if steps else (0 if active else 100),
    }


def _history_context(request: HtmxHttpRequest) -> dict[str, Any]:
    versions = list(selectors.version_list()[:HISTORY_LENGTH])
    current = versions[0] if versions else None
    compare: ConfigVersion | None = None
    compare_error = ""
    raw = request.GET.get("compare", "")
    if raw:
        by_number = {v.number: v for v in versions}
        number = version_number(raw)  # ASCII digits only: "²".isdigit() is True
        if number is not None:
            compare = (
                by_number.get(number) or selectors.version_list().filter(number=number).first()
            )
        if compare is None:
            compare_error = f"There is no version {raw}."
    return {
        "versions": versions,
        "current_version": current,
        "compare": compare,
        "compare_error": compare_error,
        "compare_changes": (
            described(
                config_changes(
                    selectors.version_configuration(compare),
                    selectors.version_configuration(current),
                )
            )
            if compare is not None and current is not None
            else []
        ),
        "can_edit": _can_edit(request),
    }


def _gpu_settings_post(request: HtmxHttpRequest) -> HttpResponse:
    if request.POST.get("action") == "rollback":
        return _rollback(request)
    try:
        registry = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
    except RegistryError as exc:
        return _config_answer(
            request, f"The compose file cannot be used: {exc}", status=503, form_version=None
        )
    form = GpuConfigForm(request.POST, services=registry.services)
    form_ok = form.is_valid()
    strategy = form.chosen_strategy
    changes = form.changes() if strategy is not None else []
    draft = gpu_config_draft(strategy=strategy, changes=changes)
    version = form.cleaned_data.get("version")
    errors = form.error_messages_by_service()
    problems: list[str] = []
    if "strategy" in form.errors:
        problems.append("Choose one of the five strategies.")
    try:
        validate_changes(changes, draft.registry, draft.gpus)
    except ConfigInputError as exc:
        problems.extend(_attach_errors(exc.errors, changes, errors))
    if not form_ok or errors or problems:
        notice = "Nothing was saved: fix the marked choices." if errors else ""
        return _config_answer(
            request,
            draft,
            status=400,
            form_version=version,
            errors=errors,
            notices=[("error", m) for m in [notice, *problems] if m],
        )
    action = form.chosen_action
    if action in ("revalidate", "preview"):
        return _config_answer(request, draft, form_version=version, show_diff=action == "preview")
    if action == "save":
        return _save(request, draft, changes, version)
    if action == "apply":
        if not _confirmed(request):
            # Without JavaScript nothing has asked yet: show what would change, and ask.
            return _config_answer(
                request, draft, form_version=version, show_diff=True, confirm_apply=True
            )
        return _apply(request, draft, changes, version)
    return _config_answer(
        request, draft, status=400, form_version=version, notices=[("error", "Unknown action.")]
    )


def _attach_errors(
    found: dict[str, Any], changes: list[AssignmentChange], errors: dict[str, list[str]]
) -> list[str]:
    """Put the service layer's "assignments[3].gpu_index" errors beside service 3's row."""
    general = []
    for key, message in found.items():
        text = "; ".join(message) if isinstance(message, list) else str(message)
        index = key.removeprefix("assignments[").partition("]")[0]
        if key.startswith("assignments[") and index.isdigit() and int(index) < len(changes):
            errors.setdefault(changes[int(index)].service, []).append(text)
        else:
            general.append(text)
    return general


def _config_answer(
    request: HtmxHttpRequest,
    draft: Draft | str,
    *,
    status: int = 200,
    oob: Iterable[str] = (),
    **config: Any,
) -> HttpResponse:
    """The form fragment for htmx, the whole page otherwise."""
    if request.htmx:
        context = _config_context(request, draft, **config)
        oob = list(oob)
        if "apply-status" in oob:
            context.update(_status_context(request))
        if "history" in oob:
            context.update(_history_context(request))
        # The GPU cards' "Will hold" lines follow the plan on screen; the live region
        # outside the form announces the result (the form itself is replaced).
        oob += ["gpu-holds", "form-announcer"]
        return _fragments(
            request, SETTINGS_TEMPLATE, "config-form", context, status=status, oob=oob
        )
    return _page(request, SETTINGS_TEMPLATE, _full_context(request, draft, **config), status=status)


def _save_or_answer(
    request: HtmxHttpRequest, draft: Draft, changes: list[AssignmentChange], version: int | None
) -> ConfigVersion | HttpResponse:
    """Save; on failure the answer that explains why, with the user's choices kept."""

    def refuse(message: str, status: int, conflict: bool = False) -> HttpResponse:
        return _config_answer(
            request,
            draft,
            status=status,
            form_version=version,
            notices=[("error", message)],
            conflict=conflict,
        )

    try:
        result = gpu_config_save(
            user=request.user,
            strategy=draft.strategy,
            changes=changes,
            expected_version=version,
            draft=draft,  # planned once for this request
        )
    except ConfigConflict as exc:
        return refuse(str(exc), 409, conflict=True)
    except ConfigInputError as exc:
        return refuse(" ".join(_attach_errors(exc.errors, changes, {})) or str(exc), 400)
    except ConfigFileError as exc:
        return refuse(str(exc), 500)
    except RegistryError as exc:
        return refuse(f"The compose file cannot be used: {exc}", 503)
    return result.version


def _saved_message(saved: ConfigVersion) -> str:
    count = len(saved.warnings)
    warned = f" with {count} warning{'s' if count != 1 else ''}" if count else ""
    return f"Saved as version {saved.number}{warned}."


def _save(
    request: HtmxHttpRequest, draft: Draft, changes: list[AssignmentChange], version: int | None
) -> HttpResponse:
    saved = _save_or_answer(request, draft, changes, version)
    if isinstance(saved, HttpResponse):
        return saved
    message = _saved_message(saved) + " Apply & Restart Services puts it into effect."
    if not request.htmx:
        messages.success(request, message)
        return redirect(reverse("pages:settings") + "#gpu-form")
    return _config_answer(
        request, _draft_or_error(), notices=[("success", message)], oob=["history", "apply-status"]
    )


def _apply(
    request: HtmxHttpRequest, draft: Draft, changes: list[AssignmentChange], version: int | None
) -> HttpResponse:
    """Apply & Restart: save what the form shows first when it differs from the saved version."""
    saved_note = ""
    if _unsaved(draft, selectors.latest_version()):
        saved = _save_or_answer(request, draft, changes, version)
        if isinstance(saved, HttpResponse):
            return saved
        saved_note = _saved_message(saved) + " "
    try:
        run = apply_run_start(user=request.user)
    except ApplyRefused as exc:
        return _config_answer(
            request,
            _draft_or_error(),
            status=exc.status_code,
            notices=[("error", f"{saved_note}{exc}")],
            oob=["apply-status", "history"] if saved_note else ["apply-status"],
        )
    message = (
        f"{saved_note}Applying version {run.version.number}: one podman-compose command "
        "recreates the changed services, then each is checked; progress is shown under Services."
    )
    if not request.htmx:
        messages.success(request, message)
        return redirect(reverse("pages:settings") + "#apply-status")
    return _config_answer(
        request, _draft_or_error(), notices=[("success", message)], oob=["apply-status", "history"]
    )


def _confirmed(request: HtmxHttpRequest) -> bool:
    """Apply and Rollback ask first: in the browser with JavaScript (static/js/app.js,
    hx-confirm), else through a second post carrying ``confirmed=1``."""
    return bool(request.htmx) or request.POST.get("confirmed") == "1"


def _rollback(request: HtmxHttpRequest) -> HttpResponse:
    if not _confirmed(request):
        context = _full_context(request)
        context["rollback_confirm"] = True
        return _page(request, SETTINGS_TEMPLATE, context)
    try:
        run = rollback_run_start(user=request.user)
    except ApplyRefused as exc:
        notice, status = ("error", str(exc)), exc.status_code
    else:
        back_to = selectors.restored_from(run.version.number)
        notice, status = (
            (
                "success",
                f"Rolling back to version {back_to} (saved again as version "
                f"{run.version.number}); progress is shown below.",
            ),
            202,
        )
    if not request.htmx:
        if status == 202:
            messages.success(request, notice[1])
            return redirect(reverse("pages:settings") + "#apply-status")
        context = _full_context(request)
        context["status_notices"] = [notice]
        return _page(request, SETTINGS_TEMPLATE, context, status=status)
    context = {
        **_status_context(request),
        **_config_context(request, _draft_or_error()),
        **_history_context(request),
        "status_notices": [notice],
    }
    # A rollback saves the restored configuration as a new version: the form and the
    # history show it at once (the form's version must match, or the next save conflicts).
    oob = ["config-form", "history", "gpu-holds"] if status == 202 else []
    oob.append("form-announcer")
    return _fragments(request, SETTINGS_TEMPLATE, "apply-status", context, status=status, oob=oob)


# --- System tab ------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@_readable_errors
def system_settings(request: HtmxHttpRequest) -> HttpResponse:
    """Settings > System: the settings the app uses, editable by staff."""
    notices: list[tuple[str, str]] = []
    status = 200
    if request.method == "POST":
        if not _can_edit(request):
            if request.htmx:
                return _alert(request, "Only staff users may change system settings.", status=403)
            form = _system_form()
            notices.append(("error", "Only staff users may change system settings."))
            status = 403
        else:
            form = _system_form(request.POST)
            if form.is_valid():
                changed = system_settings_update(values=form.setting_values())
                message = "Saved: " + ", ".join(changed) + "." if changed else "Nothing changed."
                if not request.htmx:
                    messages.success(request, message)
                    return redirect("pages:system")
                notices.append(("success", message))
                form = _system_form()
            else:
                notices.append(("error", "Nothing was saved: fix the marked settings."))
                status = 400
    else:
        form = _system_form()
    context = {
        "tab": "system",
        "form": form,
        "notices": notices,
        "can_edit": _can_edit(request),
        "environment": _environment(),
        "strategy_in_force": _strategy_in_force(),
    }
    if request.htmx:
        return _fragments(request, SYSTEM_TEMPLATE, "system-form", context, status=status)
    return _page(request, SYSTEM_TEMPLATE, context, status=status)


def _system_form(data: Any = None) -> SystemSettingsForm:
    """The System form. The default strategy is only editable until the first save: after
    it, the saved configuration's strategy is the one in force (one source of truth)."""
    saved = selectors.latest_version() is not None
    if data is not None:
        return SystemSettingsForm(data, strategy_saved=saved)
    initial = SystemSettingsForm.initial_from(selectors.system_config())
    return SystemSettingsForm(initial=initial, strategy_saved=saved)


def _strategy_in_force() -> dict[str, Any] | None:
    """The saved configuration's strategy and version, or None before the first save."""
    latest = selectors.latest_version()
    if latest is None:
        return None
    return {"label": STRATEGY_LABELS[StrategyName(latest.strategy)], "version": latest.number}


def _environment() -> list[tuple[str, str]]:
    """Settings that come from the environment (read-only here; see docs/configuration.md)."""
    simulated = settings.GPUCONFIG_SIMULATED_GPUS
    return [
        ("Compose file", str(settings.GPUCONFIG_COMPOSE_FILE)),
        ("Generated files", str(settings.GPUCONFIG_OUTPUT_DIR)),
        ("Compose command", " ".join(settings.GPUCONFIG_COMPOSE_COMMAND)),
        ("GPU source", f"simulated file {simulated}" if simulated else "NVML, then nvidia-smi"),
        ("GPU sample interval", f"{settings.GPUCONFIG_SAMPLE_SECONDS:g} s"),
    ]
