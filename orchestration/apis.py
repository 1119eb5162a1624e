"""Apply & Restart, rollback and status endpoints."""

from __future__ import annotations

import uuid

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestration.selectors import apply_status
from orchestration.services import (
    ApplyRefused,
    apply_run_start,
    rollback_run_start,
)


class Refused(APIException):
    def __init__(self, exc: ApplyRefused):
        super().__init__(str(exc))
        self.status_code = exc.status_code


_started = inline_serializer(
    "ApplyStarted",
    fields={
        "success": serializers.BooleanField(),
        "run_id": serializers.UUIDField(),
        "status_url": serializers.CharField(),
    },
)
_error = inline_serializer(
    "ApplyError", fields={"success": serializers.BooleanField(), "error": serializers.CharField()}
)


class ApplyApi(APIView):
    """Apply the saved configuration: recreate changed services in the background (202)."""

    @extend_schema(request=None, responses={202: _started, 400: _error, 409: _error, 503: _error})
    def post(self, request: Request) -> Response:
        try:
            run = apply_run_start(user=request.user)
        except ApplyRefused as exc:
            raise Refused(exc) from exc
        return _accepted(run.id)


class RollbackApi(APIView):
    """Roll back to the configuration applied before the current one (202)."""

    @extend_schema(request=None, responses={202: _started, 400: _error, 409: _error, 503: _error})
    def post(self, request: Request) -> Response:
        try:
            run = rollback_run_start(user=request.user)
        except ApplyRefused as exc:
            raise Refused(exc) from exc
        return _accepted(run.id)


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
        "containers": serializers.DictField(child=serializers.DictField()),
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
        # Reads do not write: stale runs are reaped by the periodic task (orchestration.tasks).
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
