"""``GET /api/system/gpus/headroom``: VRAM still free for new services, per GPU and overall."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gpuconfig.headroom import saved_headroom


class HeadroomApi(APIView):
    """Per GPU: capacity, what the saved plan holds, measured use outside GPU Config, and
    what is left for new services; overall: the largest service that could be added without
    moving anything, and how much free VRAM is split over GPUs (fragmented)."""

    @extend_schema(responses=OpenApiResponse(description="The headroom, as described."))
    def get(self, request: Request) -> Response:
        return Response(saved_headroom().as_dict())
