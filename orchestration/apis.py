"""Apply & Restart, rollback and status endpoints."""

from __future__ import annotations

import uuid

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api_errors import ApiErrorSerializer
from common.apis import BoundedBodyApi
from gpuconfig import gpu_apis as device_apis  # the GPU devices' APIs, with measured VRAM
from gpuconfig.apis import (
    STRATEGY_CHOICES,
    GpuConfigInputSerializer,
    changes_of,
)
from gpuconfig.domain import StrategyName
from gpuconfig.measured import gpu_inventory_view
from orchestration.selectors import apply_status, running_services_view
from orchestration.services import (
    apply_run_start,
    gpu_config_save_and_apply,
    rollback_run_start,
)

# Refusals (ApplyRefused, and the save's) are answered by common.api_errors.exception_handler.


class ApplyInputSerializer(GpuConfigInputSerializer):
    """PUT's body, optional: with it, apply saves it first when it differs from the saved
    version (one request for "save, then apply")."""

    strategy = serializers.ChoiceField(
        choices=STRATEGY_CHOICES,
        required=False,
        help_text="Required when a body is sent.",
    )


_started = inline_serializer(
    "ApplyStarted",
    fields={
        "success": serializers.BooleanField(),
        "run_id": serializers.UUIDField(),
        "status_url": serializers.CharField(),
    },
)
_error = ApiErrorSerializer


class ApplyApi(BoundedBodyApi):
    """Apply the saved configuration: recreate changed services in the background (202).
    With a body (PUT's), save it first when it differs from the saved version."""

    @extend_schema(
        request=ApplyInputSerializer,
        responses={202: _started, 400: _error, 409: _error, 500: _error, 503: _error},
    )
    def post(self, request: Request) -> Response:
        if not request.data:  # no body: apply the newest saved version as it stands
            return _accepted(apply_run_start(user=request.user).id)
        serializer = ApplyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "strategy" not in data:
            raise ValidationError({"strategy": ["Required when a body is sent."]})
        result = gpu_config_save_and_apply(
            user=request.user,
            strategy=StrategyName(data["strategy"]),
            changes=changes_of(data),
            expected_version=data.get("version"),
            from_scratch=data["from_scratch"],
        )
        return _accepted(result.run.id)


class RollbackApi(APIView):
    """Roll back to the configuration applied before the current one (202)."""

    @extend_schema(request=None, responses={202: _started, 400: _error, 409: _error, 503: _error})
    def post(self, request: Request) -> Response:
        return _accepted(rollback_run_start(user=request.user).id)


def _accepted(run_id: uuid.UUID) -> Response:
    return Response(
        {
            "success": True,
            "run_id": str(run_id),
            "status_url": f"/api/system/gpu-config/status?run={run_id}",
        },
        status=status.HTTP_202_ACCEPTED,
    )


_status = inline_serializer(
    "ApplyStatus",
    fields={
        # null before the first apply; steps are one per service the run recreates.
        "run": serializers.DictField(allow_null=True),
        "available": serializers.BooleanField(),
        "unavailable_reason": serializers.CharField(),
        # Per service: state, health, id, container, gpu (the GPU it really got), gpu_uuid,
        # planned_gpu (the applied version's), drifted, drift, drift_reason.
        "containers": serializers.DictField(child=serializers.DictField()),
        "drifted": serializers.ListField(child=serializers.CharField()),
        "summary": serializers.CharField(),
    },
)


class StatusApi(APIView):
    """The latest apply run (or ``?run=<id>``) step by step, and every managed container now."""

    @extend_schema(
        parameters=[OpenApiParameter("run", OpenApiTypes.UUID, required=False)],
        responses={200: _status, 400: _error, 404: _error},
    )
    def get(self, request: Request) -> Response:
        # A run whose worker died is ended by this read (orchestration.stale_runs).
        raw = request.query_params.get("run")
        run_id = None
        if raw:
            try:
                run_id = uuid.UUID(raw)
            except ValueError:
                raise ValidationError({"run": [f"{raw!r} is not a run id"]}) from None
        body = apply_status(run_id)
        if run_id and body["run"] is None:
            raise NotFound(f"No apply run {run_id}.")
        return Response(body)


class _RunningServiceSerializer(serializers.Serializer):
    service = serializers.CharField()
    planned_gpu = serializers.IntegerField(allow_null=True)
    drifted = serializers.BooleanField()


class GpuWithServicesSerializer(device_apis.GpuOutputSerializer):
    running_services = _RunningServiceSerializer(
        many=True, help_text="Managed services whose running container really got this GPU."
    )


class GpuListWithServicesSerializer(device_apis.GpuListOutputSerializer):
    gpus = GpuWithServicesSerializer(many=True)
    containers_available = serializers.BooleanField(
        help_text="Whether podman could be read; if not, running_services are empty."
    )
    drifted = serializers.ListField(
        child=serializers.CharField(),
        help_text="Services whose containers do not run as the applied version says.",
    )
    containers_summary = serializers.CharField()


class GpuListApi(device_apis.GpuListApi):
    """Detected GPUs with current utilization, and what each really holds: the managed
    services whose running containers got it (read from podman), with drift."""

    @extend_schema(responses=GpuListWithServicesSerializer)
    def get(self, request: Request) -> Response:
        body = gpu_inventory_view()
        running = running_services_view()
        for gpu in body["gpus"]:
            gpu["running_services"] = [
                {
                    "service": name,
                    "planned_gpu": running["containers"][name]["planned_gpu"],
                    "drifted": running["containers"][name]["drifted"],
                }
                for name in running["per_gpu"].get(gpu["index"], [])
            ]
        body["containers_available"] = running["available"]
        body["drifted"] = running["drifted"]
        body["containers_summary"] = running["summary"]
        return Response(body)
