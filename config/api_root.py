"""The browsable API's root page (/api/): every endpoint, by name."""

from __future__ import annotations

from django.urls import NoReverseMatch, reverse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

# The endpoints the root page lists, by URL name, in the order of docs/api.md.
ROOT_ENDPOINTS = (
    ("gpus", "api-gpus"),
    ("gpu-config", "api-gpu-config"),
    ("preview", "api-gpu-config-preview"),
    ("versions", "api-gpu-config-versions"),
    ("detect", "api-detect"),
    ("apply", "api-apply"),
    ("rollback", "api-rollback"),
    ("status", "api-status"),
    ("export", "api-gpu-config-export"),
    ("import", "api-gpu-config-import"),
    ("schema", "api-schema"),
    ("docs", "api-docs"),
)


class ApiRootView(APIView):
    """GPU Config's API: the endpoints, by name (see docs/api.md)."""

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        links = {}
        for label, name in ROOT_ENDPOINTS:
            try:
                links[label] = request.build_absolute_uri(reverse(name))
            except NoReverseMatch:
                continue  # an endpoint this installation does not route
        return Response(links)
