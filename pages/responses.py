"""How the Settings pages answer: a fragment for htmx (with out-of-band copies of the other
regions it changed), the whole page otherwise, a redirect after a write without JavaScript,
and one sentence in the alert area when nothing else fits."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST
from django_htmx.middleware import HtmxDetails

from common.errors import Refusal
from gpuconfig.models import ConfigVersion
from gpuconfig.registry import RegistryError
from gpuconfig.services import Draft
from orchestration.services import ApplyRefused
from pages import contexts
from pages.errors import refusal
from pages.forms import GpuForm, SystemSettingsForm, parse_gpu_form

logger = logging.getLogger(__name__)

SETTINGS_TEMPLATE = "pages/settings.html"
SYSTEM_TEMPLATE = "pages/system.html"
# Marks an answer the page may swap in even with an error status (see static/js/app.js).
FRAGMENT_HEADER = "X-GpuConfig-Fragment"
READ_ONLY = "Only staff users may change the GPU configuration."

View = Callable[..., HttpResponse]


class HtmxHttpRequest(HttpRequest):
    """What HtmxMiddleware gives every request (django-htmx's advice for type checking)."""

    htmx: HtmxDetails


def alert(request: HttpRequest, message: str, *, status: int) -> HttpResponse:
    """One sentence for the page's alert area (htmx requests that cannot answer a fragment)."""
    response = render(request, f"{SETTINGS_TEMPLATE}#alert", {"alert": message}, status=status)
    response[FRAGMENT_HEADER] = "alert"
    response["HX-Retarget"] = "#page-alert"
    response["HX-Reswap"] = "innerHTML"
    return response


def readable_errors(view: View) -> View:
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
            return alert(
                request,
                f"The server could not complete this request ({type(exc).__name__}). "
                "It has been logged. Reload the page to see the current state, then try again.",
                status=500,
            )

    return wrapper


def staff_only(view: View) -> View:
    """Anyone logged in reads; a post from anyone but staff is refused here (403), whatever
    the template showed them."""

    @functools.wraps(view)
    def wrapper(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if contexts.can_edit(request):
            return view(request, *args, **kwargs)
        if request.htmx:
            return alert(request, READ_ONLY, status=403)
        context = contexts.full_context(request, notices=[("error", READ_ONLY)])
        return page(request, SETTINGS_TEMPLATE, context, status=403)

    return wrapper


def fragments(
    request: HttpRequest,
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


def page(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ("HX-Request",))
    return response


def config_answer(
    request: HtmxHttpRequest,
    draft: Draft | str,
    *,
    status: int = 200,
    oob: Iterable[str] = (),
    **config: Any,
) -> HttpResponse:
    """The form fragment for htmx, the whole page otherwise."""
    if not request.htmx:
        context = contexts.full_context(request, draft, **config)
        return page(request, SETTINGS_TEMPLATE, context, status=status)
    context = contexts.config_context(request, draft, **config)
    oob = list(oob)
    if "apply-status" in oob:
        context.update(contexts.status_context(request))
    if "history" in oob:
        context.update(contexts.history_context(request))
    # The GPU cards' "Will hold" lines follow the plan on screen; the live region outside
    # the form announces the result (the form itself is replaced).
    oob += ["gpu-holds", "form-announcer"]
    return fragments(request, SETTINGS_TEMPLATE, "config-form", context, status=status, oob=oob)


def written(
    request: HtmxHttpRequest,
    message: str,
    *,
    anchor: str,
    oob: Iterable[str],
    draft: Draft | str | None = None,
) -> HttpResponse:
    """After a write: without JavaScript a redirect (a reload cannot write twice) with the
    message; with htmx the fresh form with the message, and the regions the write changed.

    ``draft``: the configuration now stored, when the message was worded from it."""
    if not request.htmx:
        messages.success(request, message)
        return redirect(reverse("pages:settings") + anchor)
    draft = contexts.draft_or_error() if draft is None else draft
    return config_answer(request, draft, notices=[("success", message)], oob=oob)


def confirmed(request: HtmxHttpRequest) -> bool:
    """Apply and Rollback ask first: in the browser with JavaScript (static/js/app.js,
    hx-confirm), else through a second post carrying ``confirmed=1``."""
    return bool(request.htmx) or request.POST.get("confirmed") == "1"


def gpu_form_action(view: View) -> View:
    """Validate and Preview: see ``_gpu_form``. Nothing is written, so nothing is said about
    saving when a field is refused."""
    return _gpu_form(view, writes=False)


def gpu_form_write(view: View) -> View:
    """Save and Apply: see ``_gpu_form``; a refused field means nothing was saved."""
    return _gpu_form(view, writes=True)


def _gpu_form(view: View, *, writes: bool) -> View:
    """Staff only; parse the GPU form and hand a valid one to ``view``, or answer 400 with
    the problems beside the rows they belong to (and 503 when the compose file is unusable).
    A refused field keeps what was typed in every field of its row."""

    @require_POST
    @readable_errors
    @staff_only
    @functools.wraps(view)
    def wrapper(request: HtmxHttpRequest) -> HttpResponse:
        try:
            form = parse_gpu_form(request.POST)
        except RegistryError as exc:
            return config_answer(request, exc.user_message, status=exc.status_code)
        if form.valid:
            return view(request, form)
        notice = ""
        if form.errors:
            notice = (
                "Nothing was saved: fix the marked choices."
                if writes
                else "Fix the marked choices; the plan on screen leaves them out."
            )
        notices = [("error", m) for m in [notice, *form.problems] if m]
        return config_answer(
            request,
            form.draft,
            status=400,
            form_version=form.version,
            refused=form.refused,
            notices=notices,
        )

    return wrapper


def save_refused(request: HtmxHttpRequest, form: GpuForm, exc: Refusal) -> HttpResponse:
    """A refused save: the reason beside the buttons, the user's choices kept."""
    message, status = refusal(exc)
    return config_answer(
        request,
        form.draft,
        status=status,
        form_version=form.version,
        notices=[("error", message)],
        conflict=status == 409,
    )


def apply_refused(request: HtmxHttpRequest, exc: ApplyRefused) -> HttpResponse:
    """A refused apply: the reason, and the version kept when the form was saved first."""
    draft = contexts.draft_or_error()
    saved = saved_message(exc.saved, draft) + " " if exc.saved else ""
    return config_answer(
        request,
        draft,
        status=exc.status_code,
        notices=[("error", f"{saved}{exc}")],
        oob=["apply-status", "history"] if exc.saved else ["apply-status"],
    )


def saved_message(saved: ConfigVersion, shown: Draft | str) -> str:
    """The "Saved as version N with K warnings" sentence, K counted in the list the answer
    shows (``shown``, the stored configuration as the page draws it), never in another."""
    count = len(shown.warnings) if isinstance(shown, Draft) else len(saved.warnings)
    warned = f" with {count} warning{'s' if count != 1 else ''}" if count else ""
    return f"Saved as version {saved.number}{warned}."


def rollback_answer(request: HtmxHttpRequest, notice: tuple[str, str], status: int) -> HttpResponse:
    if not request.htmx:
        context = {**contexts.full_context(request), "status_notices": [notice]}
        return page(request, SETTINGS_TEMPLATE, context, status=status)
    context = {
        **contexts.status_context(request),
        **contexts.config_context(request, contexts.draft_or_error()),
        **contexts.history_context(request),
        "status_notices": [notice],
    }
    # A rollback saves the restored configuration as a new version: the form and the
    # history show it at once (the form's version must match, or the next save conflicts).
    oob = ["config-form", "history", "gpu-holds"] if status == 202 else []
    oob.append("form-announcer")
    return fragments(request, SETTINGS_TEMPLATE, "apply-status", context, status=status, oob=oob)


def system_answer(
    request: HtmxHttpRequest,
    form: SystemSettingsForm,
    notice: tuple[str, str] | None = None,
    status: int = 200,
    *,
    loaded: str | None = None,
) -> HttpResponse:
    """``loaded``: the stored state a refused form was drawn from, kept (see
    ``regions.system_stored_state``)."""
    context = contexts.system_context(request, form, [notice] if notice else [], loaded)
    if request.htmx:
        return fragments(request, SYSTEM_TEMPLATE, "system-form", context, status=status)
    return page(request, SYSTEM_TEMPLATE, context, status=status)
