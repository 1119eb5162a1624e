"""The GPUs APIs: live readings with measured VRAM beside the estimates, re-scan, and the
suggested estimates.

They live above ``devices`` because every answer compares the measured memory with the compose
file's estimates (``gpuconfig.measured``); ``GET /api/system/gpus`` itself is served by
``orchestration.apis.GpuListApi``, which adds what each GPU's containers really got.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from devices.maintenance_apis import MaintenanceSerializer
from devices.services import gpu_inventory_rescan
from gpuconfig.measured import gpu_inventory_view
from gpuconfig.suggested_estimates import suggested_estimates


class ServiceUseSerializer(serializers.Serializer):
    service = serializers.CharField()
    measured_mb = serializers.IntegerField(help_text="MiB its processes hold on this GPU now.")
    estimate_mb = serializers.IntegerField(
        allow_null=True, help_text="Its gpuconfig.vram_estimate_mb label, in MiB."
    )
    over_estimate = serializers.BooleanField(
        help_text="Holds more than the estimate plus GPUCONFIG_VRAM_OVER_ESTIMATE_MARGIN_PERCENT."
    )


class OutsideProcessSerializer(serializers.Serializer):
    pid = serializers.IntegerField(help_text="Host PID.")
    used_mb = serializers.IntegerField(allow_null=True, help_text="MiB it holds on this GPU.")
    owner = serializers.CharField(help_text='"host process" or the container it runs in.')


class UnattributedProcessSerializer(serializers.Serializer):
    pid = serializers.IntegerField(help_text="Host PID, as the driver reports it.")
    used_mb = serializers.IntegerField(allow_null=True, help_text="MiB it holds on this GPU.")
    reason = serializers.CharField()


class MemoryUseSerializer(serializers.Serializer):
    measured = serializers.BooleanField(
        help_text="Whether per-process memory was read (NVML or nvidia-smi; never simulated)."
    )
    note = serializers.CharField(
        allow_blank=True, help_text="Why not measured, or why some use is not attributed."
    )
    services = ServiceUseSerializer(many=True)
    outside_gpu_config_mb = serializers.IntegerField(
        allow_null=True, help_text="MiB held by processes of no managed service."
    )
    outside_processes = OutsideProcessSerializer(many=True)
    unattributed_mb = serializers.IntegerField(
        allow_null=True, help_text="MiB of processes that could not be traced to a container."
    )
    unattributed_processes = UnattributedProcessSerializer(many=True)


class WarningSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    service = serializers.CharField(allow_null=True)
    gpu_index = serializers.IntegerField(allow_null=True)


class GpuHealthSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=["healthy", "warning", "critical", "unknown"],
        help_text="unknown: the GPU reports none of its memory-error counters (docs/health.md).",
    )
    reasons = serializers.ListField(child=serializers.CharField(), help_text="One sentence each.")
    cordons = serializers.BooleanField(help_text="Critical: GPU Config put it in maintenance.")
    readings = serializers.DictField(help_text="ECC, remapped rows, clock events, Xids read.")


class GpuOutputSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    uuid = serializers.CharField()
    name = serializers.CharField()
    vram_total_mb = serializers.IntegerField(
        allow_null=True, help_text="MiB, as the driver reports it (nvidia-smi: 24564MiB)."
    )
    vram_used_mb = serializers.IntegerField(allow_null=True, help_text="MiB in use.")
    compute_capability = serializers.CharField(allow_null=True)
    utilization_percent = serializers.IntegerField(allow_null=True)
    temperature_c = serializers.IntegerField(allow_null=True)
    power_w = serializers.FloatField(allow_null=True)
    vram_reserved_mb = serializers.IntegerField(
        allow_null=True,
        help_text="MiB the driver reserves for itself (NVML memory info v2); not in used.",
    )
    vram_free_mb = serializers.IntegerField(
        allow_null=True, help_text="MiB: total - reserved - used, what a process could allocate."
    )
    present = serializers.BooleanField(help_text="False for a GPU detected before but not now.")
    vendor = serializers.ChoiceField(
        choices=["nvidia", "amd"], help_text="Who made the GPU: it decides which services it runs."
    )
    device_index = serializers.IntegerField(
        help_text="The vendor's own index, as the container device name uses it "
        "(nvidia.com/gpu=N, amd.com/gpu=N); equals index on a host with one vendor."
    )
    render_node = serializers.CharField(
        allow_null=True, help_text="AMD: the DRM render node read from sysfs by PCI address."
    )
    pci_bus = serializers.CharField(allow_null=True)
    integrated = serializers.BooleanField(
        help_text="An integrated GPU whose VRAM is a small BIOS carve-out: not planned "
        "unless the operator includes it (Django admin, GPU devices, Planned)."
    )
    memory_use = MemoryUseSerializer()
    health = GpuHealthSerializer()
    maintenance = MaintenanceSerializer()


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
    warnings = WarningSerializer(many=True, help_text="Services holding more than their estimate.")


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


class SuggestedEstimateSerializer(serializers.Serializer):
    service = serializers.CharField()
    estimate_mb = serializers.IntegerField(
        allow_null=True, help_text="The label's value now, in MiB."
    )
    peak_mb = serializers.IntegerField(
        allow_null=True, help_text="Highest MiB measured (all its processes); null: never seen."
    )
    measured_now_mb = serializers.IntegerField(allow_null=True, help_text="MiB held now.")
    suggested_mb = serializers.IntegerField(
        allow_null=True, help_text="The peak rounded up to 100 MiB."
    )
    label_line = serializers.CharField(
        allow_blank=True, help_text="The line to put under the service's labels in compose."
    )
    changes_estimate = serializers.BooleanField()


class SuggestedEstimatesOutputSerializer(serializers.Serializer):
    compose_file = serializers.CharField(
        help_text=(
            "The file to edit (GPU Config never edits it): its absolute path for staff, "
            "its name alone for read-only users."
        )
    )
    services = SuggestedEstimateSerializer(many=True)


def _compose_file_shown_to(request: Request) -> str:
    """Staff edit the compose file, so they get its path; read-only users only its name:
    the host's folder layout is not theirs to learn."""
    compose_file = settings.GPUCONFIG_COMPOSE_FILE
    return str(compose_file) if request.user.is_staff else compose_file.name


class SuggestedEstimatesApi(APIView):
    """Per managed service, its measured peak VRAM and the estimate label to write."""

    @extend_schema(responses=SuggestedEstimatesOutputSerializer)
    def get(self, request: Request) -> Response:
        return Response(
            {
                "compose_file": _compose_file_shown_to(request),
                "services": [s.as_dict() for s in suggested_estimates()],
            }
        )
