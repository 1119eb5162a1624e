"""Swagger UI for logged-in users, without inline script (the CSP allows none)."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework.request import Request


class ApiDocsView(SpectacularSwaggerSplitView):
    """Swagger UI; its start-up script is served from ``?script`` instead of inline.

    OPTIONS answers plainly: DRF's metadata answer has no HTML template to render with, so
    the inherited one was a 500.
    """

    def options(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:  # type: ignore[override]
        return HttpResponse(status=200, headers={"Allow": "GET, HEAD, OPTIONS"})
