"""GPU inventory API: live readings and re-scan."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from devices.selectors import gpu_inventory_view
from devices.services import gpu_inventory_rescan


class GpuOutputSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    uuid = serializers.CharField()
    name = serializers.CharField()
    vram_total_mb = serializers.IntegerField(allow_null=True)
    vram_used_mb = serializers.IntegerField(allow_null=True)
    compute_capability = serializers.CharField(allow_null=True)
    utilization_percent = serializers.IntegerField(allow_null=True)
    temperature_c = serializers.IntegerField(allow_null=True)
    power_w = serializers.FloatField(allow_null=True)
    present = serializers.BooleanField(help_text="False for a GPU detected before but not now.")


class GpuListOutputSerializer(serializers.Serializer):
    gpus = GpuOutputSerializer(many=True)
    # A field named "source" shadows Field.source for type checkers only; DRF pops
    # declared fields off the class, so at run time this is an ordinary field.
    source = serializers.CharField(  # type: ignore[assignment]
        help_text="nvml, nvidia-smi, simulated, none or inventory"
    )
    sampled_at = serializers.DateTimeField()
    age_seconds = serializers.FloatField(help_text="How old the shared reading is.")
    message = serializers.CharField(allow_blank=True)
    error = serializers.CharField(
        allow_null=True, help_text="Why the last detection failed; readings are the last good ones."
    )


class GpuListApi(APIView):
    """Detected GPUs with current utilization (sampled at most about once a second)."""

    @extend_schema(responses=GpuListOutputSerializer)
    def get(self, request: Request) -> Response:
        return Response(gpu_inventory_view())


class DetectOutputSerializer(GpuListOutputSerializer):
    added = serializers.ListField(child=serializers.IntegerField())
    updated = serializers.ListField(child=serializers.IntegerField())
    disappeared = serializers.ListField(child=serializers.IntegerField())


class GpuDetectApi(APIView):
    """Re-scan GPUs now and update the ``gpu_devices`` inventory (staff only)."""

    @extend_schema(
        request=None, responses={200: DetectOutputSerializer, 502: DetectOutputSerializer}
    )
    def post(self, request: Request) -> Response:
        result = gpu_inventory_rescan()
        body: dict[str, Any] = {
            **gpu_inventory_view(),
            "added": result.added,
            "updated": result.updated,
            "disappeared": result.disappeared,
        }
        # A failed detection is the driver's fault, not the client's: 502, inventory unchanged.
        code = status.HTTP_502_BAD_GATEWAY if result.sample.error else status.HTTP_200_OK
        return Response(body, status=code)
