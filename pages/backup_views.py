"""Settings > System: download a backup of the GPU configuration, and restore one (staff only).

Self-contained on purpose (its own URLs, templates and access checks), so the Settings pages
can move to their own app without untangling it. The upload form answers htmx with its own
fragment (``pages/_backup.html``); without JavaScript the same posts render a small page.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from common.documents import quoted
from common.errors import Refusal
from common.parsers import version_number
from gpuconfig.backup import (
    MAX_BYTES,
    Backup,
    BackupError,
    backup_document,
    parse_backup,
    render_backup,
)
from gpuconfig.backup_services import ImportResult, gpu_config_export, gpu_config_import
from gpuconfig.services import ConfigConflict
from pages import contexts

PANEL_TEMPLATE = "pages/_backup.html"
PAGE_TEMPLATE = "pages/backup_page.html"
SYSTEM_FORM = "pages/system.html#system-form"
# Marks an answer htmx may swap in even with an error status (see static/js/app.js).
FRAGMENT_HEADER = "X-GpuConfig-Fragment"
STAFF_ONLY = "Only staff users may download or restore backups."
ACTIONS = ("preview", "import", "confirm")


def _is_htmx(request: HttpRequest) -> bool:
    # The header itself, not django-htmx's request.htmx: this module needs nothing else of it.
    return request.headers.get("HX-Request") == "true"


def _is_staff(request: HttpRequest) -> bool:
    return bool(request.user.is_staff)


def _answer(
    request: HttpRequest, context: dict[str, Any], *, status: int = 200, stored: bool = False
) -> HttpResponse:
    """The backup panel for htmx; the small backup page otherwise.

    ``stored``: the import changed what is stored, so the System settings form above the
    panel is redrawn from the database too (out of band): left as it was, it would show the
    old values, and its Save settings would silently undo the import.
    """
    context = {"can_edit": _is_staff(request), "tab": "system", **context}
    if _is_htmx(request):
        html = render_to_string(PANEL_TEMPLATE, context, request)
        if stored:
            system = contexts.system_context(request, contexts.system_form(), [])
            html += render_to_string(SYSTEM_FORM, {**system, "oob": True}, request)
        response = HttpResponse(html, status=status)
        response[FRAGMENT_HEADER] = "backup"
        return response
    return render(request, PAGE_TEMPLATE, context, status=status)


@require_GET
def backup_download(request: HttpRequest) -> HttpResponse:
    """The whole configuration as a YAML attachment; ``?versions=1`` adds the history."""
    if not _is_staff(request):
        return _answer(request, {"backup_notices": [("error", STAFF_ONLY)]}, status=403)
    backup = gpu_config_export(include_versions=request.GET.get("versions") == "1")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    version = f"-v{backup.configuration_version}" if backup.configuration_version else ""
    response = HttpResponse(render_backup(backup), content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="gpu-config-{stamp}{version}.yml"'
    return response


@require_POST
def backup_import(request: HttpRequest) -> HttpResponse:
    """Preview (dry run), import, or confirm a previewed import of an uploaded backup."""
    if not _is_staff(request):
        return _answer(request, {"backup_notices": [("error", STAFF_ONLY)]}, status=403)
    action = request.POST.get("action", "preview")
    if action not in ACTIONS:
        return _refuse(request, f"Unknown action {quoted(action)}.", status=400)
    try:
        data, expected_version = _submitted_file(request, action)
    except _NotSubmitted as missing:
        return _refuse(request, missing.message, status=missing.status)
    try:
        backup = parse_backup(data)
        result = gpu_config_import(
            backup=backup,
            user=request.user,
            dry_run=action == "preview",
            expected_version=expected_version,
        )
    except BackupError as exc:
        return _refuse(request, "Nothing was imported: the file is not usable.", errors=exc.lines())
    except ConfigConflict as exc:
        return _refuse(request, f"Nothing was imported. {exc}", status=409)
    except Refusal as exc:  # the file could not be written (500), the compose file (503)
        return _refuse(request, exc.user_message, status=exc.status_code)
    if result.dry_run:
        return _previewed(request, result, backup)
    return _imported(request, result)


class _NotSubmitted(Exception):
    """The request brings no usable file: what to tell the user, with the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _submitted_file(request: HttpRequest, action: str) -> tuple[bytes, int | None]:
    """The backup's bytes and, for a confirm, the version its preview was compared against.

    Raises :class:`_NotSubmitted` when there is no file, it is too large, or the confirm lacks
    its base version."""
    if action == "confirm":
        # The previewed file comes back as the canonical document the preview showed, with the
        # version it was compared against: a save in between is a conflict, not overwritten.
        expected_version = version_number(request.POST.get("base_version", ""))
        if expected_version is None:
            raise _NotSubmitted("The preview is incomplete: upload the file again.")
        return request.POST.get("document", "").encode(), expected_version
    upload = request.FILES.get("file")
    if upload is None:
        raise _NotSubmitted("Choose a backup file to upload.")
    if upload.size is not None and upload.size > MAX_BYTES:
        raise _NotSubmitted(
            f"{upload.name} is {upload.size} bytes; a backup may be at most {MAX_BYTES} "
            "bytes. Nothing was imported.",
            status=413,
        )
    return upload.read(MAX_BYTES + 1), None


def _previewed(request: HttpRequest, result: ImportResult, backup: Backup) -> HttpResponse:
    """The dry run's answer: what the import would change, and the document to confirm."""
    context: dict[str, Any] = {"backup_result": result}
    # The history is not imported: leave it out of what the confirm posts back.
    context["backup_document"] = json.dumps(backup_document(replace(backup, versions=None)))
    context["backup_history_note"] = backup.versions is not None
    return _answer(request, context)


def _imported(request: HttpRequest, result: ImportResult) -> HttpResponse:
    """The answer to a saved import: a notice for htmx, else a redirect with messages."""
    done = (
        f"Imported as version {result.new_version}. Apply & Restart Services on the GPU "
        "Configuration tab puts it into effect."
    )
    if not _is_htmx(request):
        # Without JavaScript: redirect after the write, so a reload cannot import twice.
        messages.success(request, done)
        for line in (*result.warnings, *result.config_warnings):
            messages.warning(request, line)
        return redirect(reverse("pages:system") + "#backup")
    context: dict[str, Any] = {"backup_result": result, "backup_notices": [("success", done)]}
    return _answer(request, context, stored=True)


def _refuse(
    request: HttpRequest, message: str, *, status: int = 400, errors: list[str] | None = None
) -> HttpResponse:
    return _answer(
        request,
        {"backup_notices": [("error", message)], "backup_errors": errors or []},
        status=status,
    )
