"""``/api/system/gpus/<index>/maintenance``: put a GPU in maintenance (POST) or take it out
(DELETE). Staff only (the API's default permission: reads for users, writes for staff)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api_errors import ApiErrorSerializer
from common.apis import StrictSerializer
from devices.maintenance import (
    MAX_REASON_CHARS,
    GpuNotFound,
    gpu_maintenance_drain,
    gpu_maintenance_end,
    gpu_maintenance_start,
    gpu_maintenance_states,
)
from devices.services import gpu_sample


class MaintenanceSerializer(serializers.Serializer[dict[str, Any]]):
    active = serializers.BooleanField()
    reason = serializers.CharField(allow_blank=True)
    by = serializers.CharField(allow_blank=True, help_text="A user name, or GPU Config itself.")
    since = serializers.DateTimeField(allow_null=True)
    automatic = serializers.BooleanField(help_text="Set by a critical health event.")
    draining = serializers.BooleanField(
        help_text="Drained: plans move its services elsewhere; preview, save and apply to do it."
    )


# The API's error body (common.api_errors), named as gpuconfig's schema names it.
_error = ApiErrorSerializer
_REFUSALS = {400: _error, 403: _error, 404: _error}
# The URL takes any path segment, so that "/gpus/x/maintenance" is a JSON 404 like any other
# refusal of this API, not Django's HTML page; the schema still says a GPU index.
_INDEX = OpenApiParameter("gpu_index", OpenApiTypes.INT, OpenApiParameter.PATH)


def _gpu_index(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise GpuNotFound(f"There is no GPU {text!r}: a GPU index is a whole number >= 0.")
    return int(text)


class MaintenanceInputSerializer(StrictSerializer):
    reason = serializers.CharField(
        allow_blank=True, max_length=MAX_REASON_CHARS * 2, help_text="Why; shown on the card."
    )


class GpuMaintenanceApi(APIView):
    """A GPU's maintenance state: GET it, POST to start (with a reason), DELETE to end."""

    @extend_schema(
        parameters=[_INDEX], responses={200: MaintenanceSerializer, 403: _error, 404: _error}
    )
    def get(self, request: Request, gpu_index: str) -> Response:
        index = _gpu_index(gpu_index)
        state = gpu_maintenance_states().get(index)
        if state is None:
            return Response({"success": False, "error": f"There is no GPU {index}."}, status=404)
        return Response(state.as_api_dict())

    @extend_schema(
        parameters=[_INDEX],
        request=MaintenanceInputSerializer,
        responses={200: MaintenanceSerializer, **_REFUSALS},
    )
    def post(self, request: Request, gpu_index: str) -> Response:
        index = _gpu_index(gpu_index)
        body = MaintenanceInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        state = gpu_maintenance_start(
            gpu_index=index,
            reason=body.validated_data["reason"],
            by=request.user.get_username(),
        )
        return Response(state.as_api_dict())

    @extend_schema(
        parameters=[_INDEX], request=None, responses={200: MaintenanceSerializer, **_REFUSALS}
    )
    def delete(self, request: Request, gpu_index: str) -> Response:
        state = gpu_maintenance_end(
            gpu_index=_gpu_index(gpu_index),
            by=request.user.get_username(),
            health=gpu_sample().health,
        )
        return Response(state.as_api_dict())


class GpuDrainApi(APIView):
    """Drain a GPU in maintenance: every plan moves its services elsewhere from now on.

    Then ``POST /api/system/gpu-config/preview`` shows the moves, ``PUT`` saves them and
    ``POST .../apply`` applies them (with rollback), like any other change.
    """

    @extend_schema(
        parameters=[_INDEX], request=None, responses={200: MaintenanceSerializer, **_REFUSALS}
    )
    def post(self, request: Request, gpu_index: str) -> Response:
        index = _gpu_index(gpu_index)
        state = gpu_maintenance_drain(gpu_index=index, by=request.user.get_username())
        return Response(state.as_api_dict())
