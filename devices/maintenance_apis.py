"""``/api/system/gpus/<index>/maintenance``: put a GPU in maintenance (POST) or take it out
(DELETE). Staff only (the API's default permission: reads for users, writes for staff)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.apis import StrictSerializer
from devices.maintenance import (
    MAX_REASON_CHARS,
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


class MaintenanceInputSerializer(StrictSerializer):
    reason = serializers.CharField(
        allow_blank=True, max_length=MAX_REASON_CHARS * 2, help_text="Why; shown on the card."
    )


class GpuMaintenanceApi(APIView):
    """A GPU's maintenance state: GET it, POST to start (with a reason), DELETE to end."""

    @extend_schema(responses=MaintenanceSerializer)
    def get(self, request: Request, gpu_index: int) -> Response:
        state = gpu_maintenance_states().get(gpu_index)
        if state is None:
            return Response(
                {"success": False, "error": f"There is no GPU {gpu_index}."}, status=404
            )
        return Response(state.as_api_dict())

    @extend_schema(request=MaintenanceInputSerializer, responses=MaintenanceSerializer)
    def post(self, request: Request, gpu_index: int) -> Response:
        body = MaintenanceInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        state = gpu_maintenance_start(
            gpu_index=gpu_index,
            reason=body.validated_data["reason"],
            by=request.user.get_username(),
        )
        return Response(state.as_api_dict())

    @extend_schema(request=None, responses=MaintenanceSerializer)
    def delete(self, request: Request, gpu_index: int) -> Response:
        state = gpu_maintenance_end(
            gpu_index=gpu_index, by=request.user.get_username(), health=gpu_sample().health
        )
        return Response(state.as_api_dict())


class GpuDrainApi(APIView):
    """Drain a GPU in maintenance: every plan moves its services elsewhere from now on.

    Then ``POST /api/system/gpu-config/preview`` shows the moves, ``PUT`` saves them and
    ``POST .../apply`` applies them (with rollback), like any other change.
    """

    @extend_schema(request=None, responses=MaintenanceSerializer)
    def post(self, request: Request, gpu_index: int) -> Response:
        state = gpu_maintenance_drain(gpu_index=gpu_index, by=request.user.get_username())
        return Response(state.as_api_dict())
