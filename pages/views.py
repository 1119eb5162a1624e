"""HTML views: the Settings area (GPU Configuration, System) and the health endpoint.

One view per action, each posting to its own URL (the form's buttons carry ``formaction``, so
the same posts work without JavaScript): parse the form, call one service, render. htmx gets
the fragment the action changed (plus out-of-band copies of the other regions it touched);
without JavaScript the same posts re-render the whole page, or redirect after a write.
What each region shows is gathered in ``pages/contexts.py``; how a response is shaped, and the
access checks (anyone logged in reads, only staff change anything), in ``pages/responses.py``.
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import (
    require_GET,
    require_http_methods,
    require_POST,
    require_safe,
)

from common.errors import Refusal
from common.parsers import version_number
from gpuconfig import selectors
from gpuconfig.drafts import version_restore_draft
from gpuconfig.services import (
    gpu_config_save,
    system_settings_update,
)
from orchestration import selectors as run_selectors
from orchestration.services import (
    ApplyRefused,
    failed_version_discard,
    gpu_config_save_and_apply,
    rollback_run_start,
)
from orchestration.stale_runs import reap_stale_runs_on_read
from pages import contexts
from pages.forms import GpuForm
from pages.responses import (
    SETTINGS_TEMPLATE,
    HtmxHttpRequest,
    View,
    alert,
    apply_refused,
    config_answer,
    confirmed,
    fragments,
    gpu_form_action,
    gpu_form_write,
    page,
    readable_errors,
    rollback_answer,
    save_refused,
    saved_message,
    staff_only,
    system_answer,
    written,
)

logger = logging.getLogger(__name__)

GPU_FRAGMENTS = (
    "gpu-cards",
    "config-form",
    "apply-status",
    "history",
    "version-diff",
    "hosts",
)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("pages:settings")


@login_not_required
@require_safe  # HEAD too: it is what load balancers send
def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and health checks: the database decides the HTTP status;
    the broker, the worker and podman are reported beside it, so that a podman hiccup does
    not get the web container restarted. Also ends runs whose worker died (stale_runs)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any database failure means "not healthy", whatever its type
        # The driver's text names hosts, users and databases: the log has it, callers (who
        # are anonymous, and whose session could not be read now anyway) learn only this.
        logger.error("health check: the database is unavailable: %s", exc)
        return JsonResponse({"status": "error", "database": "unavailable"}, status=503)
    reap_stale_runs_on_read()
    parts = run_selectors.dependency_health()
    return JsonResponse({"status": "ok", "database": "ok", **parts})


# --- GPU Configuration tab: reading -------------------------------------------------------


@require_http_methods(["GET", "POST"])
@readable_errors
def gpu_settings(request: HtmxHttpRequest) -> HttpResponse:
    """The page, or one of its fragments (``?part=``, htmx). A post here is routed by its
    ``action`` (forms rendered before each action had its own URL, and scripts)."""
    if request.method == "POST":
        return ACTIONS.get(request.POST.get("action") or "revalidate", gpu_validate)(request)
    part = request.GET.get("part", "")
    if not (part and request.htmx):
        return page(request, SETTINGS_TEMPLATE, contexts.full_context(request))
    if part not in GPU_FRAGMENTS:
        return alert(request, f"Unknown part of the page: {part!r}.", status=400)
    if part == "gpu-cards":
        context = contexts.cards_context()
    elif part == "config-form":
        context = contexts.config_context(request, contexts.draft_or_error())
    elif part == "apply-status":
        was_active = request.GET.get("was_active") == "1"
        context = contexts.status_context(request, was_active=was_active)
    elif part == "hosts":
        context = contexts.hosts_context(request)
    else:
        context = contexts.history_context(request)
    oob: list[str] = []
    if context.get("run_finished_now"):
        # The run just ended: the history's "Applied" column changed with it, and the
        # form's Apply button is enabled again.
        context.update(contexts.history_context(request))
        context.update(contexts.apply_readiness_context())
        oob.extend(["history", "form-actions"])
    return fragments(request, SETTINGS_TEMPLATE, part, context, oob=oob)


@require_GET
@readable_errors
def gpu_compare(request: HtmxHttpRequest) -> HttpResponse:
    """A saved version beside the current one (``?compare=<number>``)."""
    if not request.htmx:
        return page(request, SETTINGS_TEMPLATE, contexts.full_context(request))
    context = contexts.history_context(request)
    return fragments(request, SETTINGS_TEMPLATE, "version-diff", context)


# --- GPU Configuration tab: the form's actions ----------------------------------------------


@gpu_form_action
def gpu_validate(request: HtmxHttpRequest, form: GpuForm) -> HttpResponse:
    """Any change in the form: the table planned again, with its warnings."""
    return config_answer(request, form.draft, form_version=form.version)


@gpu_form_action
def gpu_preview(request: HtmxHttpRequest, form: GpuForm) -> HttpResponse:
    """Preview Changes: the plan, and what differs from the saved version."""
    return config_answer(request, form.draft, form_version=form.version, show_diff=True)


@gpu_form_write
def gpu_save(request: HtmxHttpRequest, form: GpuForm) -> HttpResponse:
    try:
        result = gpu_config_save(
            user=request.user,
            strategy=form.draft.strategy,
            changes=form.changes,
            expected_version=form.version,
            draft=form.draft,  # planned once for this request
            only_if_changed=True,
            from_scratch=form.draft.from_scratch,
        )
    except Refusal as exc:
        return save_refused(request, form, exc)
    draft = contexts.draft_or_error()  # what the answer shows: its warnings are the ones counted
    if result.unchanged:
        message = f"Nothing changed: version {result.version.number} is already saved."
    else:
        message = (
            saved_message(result.version, draft) + " Apply & Restart Services puts it into effect."
        )
    return written(
        request, message, anchor="#gpu-form", oob=["history", "apply-status"], draft=draft
    )


@gpu_form_write
def gpu_apply(request: HtmxHttpRequest, form: GpuForm) -> HttpResponse:
    """Apply & Restart: the form is saved first when it differs from the saved version."""
    if not confirmed(request):  # without JavaScript nothing has asked yet: ask on the page
        return config_answer(
            request, form.draft, form_version=form.version, show_diff=True, confirm_apply=True
        )
    try:
        result = gpu_config_save_and_apply(
            user=request.user,
            strategy=form.draft.strategy,
            changes=form.changes,
            expected_version=form.version,
            draft=form.draft,
            from_scratch=form.draft.from_scratch,
        )
    except ApplyRefused as exc:
        return apply_refused(request, exc)
    except Refusal as exc:  # the save's: nothing saved, nothing applied
        return save_refused(request, form, exc)
    draft = contexts.draft_or_error()
    message = (
        f"{saved_message(result.saved, draft) + ' ' if result.saved else ''}Applying version "
        f"{result.run.version.number}: one podman-compose command recreates the changed "
        "services, then each is checked; progress is shown under Services."
    )
    return written(
        request, message, anchor="#apply-status", oob=["apply-status", "history"], draft=draft
    )


@require_POST
@readable_errors
@staff_only
def gpu_rollback(request: HtmxHttpRequest) -> HttpResponse:
    """Roll back to the version applied before the current one (asked first)."""
    if not confirmed(request):
        context = {**contexts.full_context(request), "rollback_confirm": True}
        return page(request, SETTINGS_TEMPLATE, context)
    try:
        run = rollback_run_start(user=request.user)
    except ApplyRefused as exc:
        return rollback_answer(request, ("error", str(exc)), exc.status_code)
    back_to = selectors.restored_from(run.version.number)
    message = (
        f"Rolling back to version {back_to} (saved again as version {run.version.number}); "
        "progress is shown below."
    )
    if not request.htmx:
        messages.success(request, message)
        return redirect(reverse("pages:settings") + "#apply-status")
    return rollback_answer(request, ("success", message), 202)


@require_POST
@readable_errors
@staff_only
def gpu_discard(request: HtmxHttpRequest) -> HttpResponse:
    """Discard a version whose apply rolled back: the running one is saved again as the
    newest version (nothing is restarted: it is what runs)."""
    try:
        done = failed_version_discard(user=request.user)
    except ApplyRefused as exc:
        return rollback_answer(request, ("error", str(exc)), exc.status_code)
    message = (
        f"Version {done.failed.number} discarded: version {done.running.number}, the one "
        f"running, is saved again as version {done.restored.number} and shown in the form."
    )
    return written(request, message, anchor="#gpu-form", oob=["history", "apply-status"])


@require_POST
@readable_errors
@staff_only
def gpu_restore(request: HtmxHttpRequest) -> HttpResponse:
    """Load a saved version's placement into the form (as Manual choices) and preview what
    restoring it moves; nothing is saved until Save or Apply & Restart."""
    number = version_number(request.POST.get("version_to_restore", ""))
    version = selectors.version_list().filter(number=number).first() if number else None
    if version is None:
        return alert(request, "Choose a saved version to restore.", status=400)
    draft = version_restore_draft(version)
    latest = selectors.latest_version()
    notice = (
        f"Version {version.number}'s placement is in the form as Manual choices; the changes "
        "below are what restoring it moves. Save, or Apply & Restart Services, to restore it."
    )
    return config_answer(
        request,
        draft,
        form_version=latest.number if latest else 0,
        show_diff=True,
        notices=[("info", notice)],
    )


ACTIONS: dict[str, View] = {
    "revalidate": gpu_validate,
    "preview": gpu_preview,
    "save": gpu_save,
    "apply": gpu_apply,
    "rollback": gpu_rollback,
}


# --- System tab ------------------------------------------------------------------------------

SYSTEM_READ_ONLY = "Only staff users may change system settings."
SYSTEM_NOT_SAVED = "Nothing was saved: fix the marked settings."
SYSTEM_STALE = (
    "The settings changed since this page was loaded (a backup import, or another user's "
    "save). Nothing was saved: the form now shows what is stored; change it again and save."
)


@require_http_methods(["GET", "POST"])
@readable_errors
def system_settings(request: HtmxHttpRequest) -> HttpResponse:
    """Settings > System: the settings the app uses, editable by staff."""
    if request.method == "GET":
        return system_answer(request, contexts.system_form())
    if not contexts.can_edit(request):
        if request.htmx:
            return alert(request, SYSTEM_READ_ONLY, status=403)
        return system_answer(request, contexts.system_form(), ("error", SYSTEM_READ_ONLY), 403)
    loaded = request.POST.get("loaded", "")
    if loaded and loaded != contexts.system_stored_state():
        # Drawn before what is stored now: saving it would write the old values back.
        return system_answer(request, contexts.system_form(), ("error", SYSTEM_STALE), 409)
    form = contexts.system_form(request.POST)
    if not form.is_valid():
        return system_answer(request, form, ("error", SYSTEM_NOT_SAVED), 400, loaded=loaded)
    changed = system_settings_update(values=form.setting_values())
    message = "Saved: " + ", ".join(changed) + "." if changed else "Nothing changed."
    if not request.htmx:
        messages.success(request, message)
        return redirect("pages:system")
    return system_answer(request, contexts.system_form(), ("success", message))
