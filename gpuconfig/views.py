"""HTML views: the Settings area (GPU Configuration, System) and the health endpoint."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from devices.selectors import gpu_inventory_view


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("gpuconfig:settings")


@login_not_required
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and the run script: the database answers."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any database failure means "not healthy", whatever its type
        return JsonResponse({"status": "error", "database": str(exc)}, status=503)
    return JsonResponse({"status": "ok"})


@require_GET
def gpu_settings(request: HttpRequest) -> HttpResponse:
    inventory = gpu_inventory_view()
    template = "gpuconfig/settings.html#gpu-cards" if request.htmx else "gpuconfig/settings.html"
    return render(request, template, {"inventory": inventory, "tab": "gpu"})
