"""The GPU card's maintenance buttons: put a GPU in maintenance, drain it, end it (staff).

Plain form posts answered with a redirect and a message: the card is polled, so the page
reloads once with the new state everywhere (cards, form, preview)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from common.errors import Refusal
from devices.maintenance import (
    gpu_maintenance_drain,
    gpu_maintenance_end,
    gpu_maintenance_start,
)
from devices.services import gpu_sample
from pages.responses import HtmxHttpRequest, readable_errors, staff_only


@require_POST
@readable_errors
@staff_only
def gpu_maintenance(request: HtmxHttpRequest, gpu_index: int) -> HttpResponse:
    """``action``: start (with ``reason``), drain or end."""
    action = request.POST.get("action", "")
    by = request.user.get_username()
    try:
        if action == "start":
            gpu_maintenance_start(gpu_index=gpu_index, reason=request.POST.get("reason", ""), by=by)
            message = (
                f"GPU {gpu_index} is in maintenance: it takes no new services. The services on "
                "it keep running until you drain it."
            )
        elif action == "drain":
            gpu_maintenance_drain(gpu_index=gpu_index, by=by)
            message = (
                f"GPU {gpu_index} is being drained: Preview shows where its services go; Save "
                "and Apply & Restart move them."
            )
        elif action == "end":
            gpu_maintenance_end(gpu_index=gpu_index, by=by, health=gpu_sample().health)
            message = f"GPU {gpu_index} is out of maintenance: plans may use it again."
        else:
            message = ""
            messages.error(request, f"Unknown maintenance action {action!r}; nothing changed.")
    except Refusal as refusal:
        messages.error(request, f"{refusal.user_message} Nothing was changed.")
    else:
        if message:
            messages.success(request, message)
    return redirect(reverse("pages:settings") + "#gpu-cards")
