"""The backup API: export the configuration, import a backup (staff only, like the page)."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.apis import BoundedBodyApi
from common.documents import quoted
from common.parsers import version_number
from gpuconfig.backup import BackupError, OutputFormat, parse_backup, render_backup
from gpuconfig.backup_services import gpu_config_export, gpu_config_import

STAFF_ONLY = "Only staff users may export or import backups."
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _flag(request: Request, name: str) -> bool:
    """A true/false query parameter; anything else is a 400 naming it (never read as false:
    an unknown ``dry_run`` value would save for real)."""
    raw = request.query_params.get(name, "")
    if raw.lower() not in _TRUE | _FALSE:
        raise ValidationError(
            {name: [f"{quoted(raw)} is not true or false (1/true/yes/on or 0/false/no/off)"]}
        )
    return raw.lower() in _TRUE


class StaffOnly(BasePermission):
    """A backup holds every setting and restoring one rewrites them: staff only, reads too."""

    message = STAFF_ONLY

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)


class GpuConfigExportApi(APIView):
    """The whole configuration as one backup document (YAML by default, or JSON)."""

    permission_classes = [StaffOnly]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # ``?format=`` picks the document's format here, not one of DRF's renderers (which
        # would answer 404 for "yaml"): errors still come back as JSON.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        parameters=[
            OpenApiParameter("format", str, enum=[f.value for f in OutputFormat]),
            OpenApiParameter("versions", bool, description="include the version history"),
        ],
        # Both formats carry the same document: an object (see docs/backup.md).
        responses={
            (200, "application/yaml"): OpenApiTypes.OBJECT,
            (200, "application/json"): OpenApiTypes.OBJECT,
        },
    )
    def get(self, request: Request) -> HttpResponse:
        raw = request.query_params.get("format", OutputFormat.YAML.value)
        if raw not in {f.value for f in OutputFormat}:
            raise ValidationError({"format": [f"{quoted(raw)} is not one of: yaml, json"]})
        output = OutputFormat(raw)
        backup = gpu_config_export(include_versions=_flag(request, "versions"))
        content_type = "application/json" if output == OutputFormat.JSON else "application/yaml"
        # A plain Django response: the body is the document itself, not DRF's rendering of it.
        return HttpResponse(
            render_backup(backup, output), content_type=f"{content_type}; charset=utf-8"
        )


_import_response = inline_serializer(
    "GpuConfigImported",
    fields={
        "success": serializers.BooleanField(),
        "dry_run": serializers.BooleanField(),
        "base_version": serializers.IntegerField(),
        "version": serializers.IntegerField(allow_null=True),
        "changes": serializers.ListField(child=serializers.CharField()),
        "warnings": serializers.ListField(child=serializers.CharField()),
        "config_warnings": serializers.ListField(child=serializers.CharField()),
    },
)


class GpuConfigImportApi(BoundedBodyApi):
    """Import a backup (the request body, YAML or JSON) as a new version; ``?dry_run=1``
    only says what would change. ``?version=N`` refuses (409) if someone saved since N."""

    permission_classes = [StaffOnly]

    @extend_schema(
        parameters=[
            OpenApiParameter("dry_run", bool),
            OpenApiParameter("version", int, description="the version a dry run was made on"),
        ],
        request={"application/yaml": str, "application/json": dict},
        responses={200: _import_response},
    )
    def post(self, request: Request) -> Response:
        raw_version = request.query_params.get("version")
        expected_version = version_number(raw_version) if raw_version is not None else None
        if raw_version is not None and expected_version is None:
            raise ValidationError({"version": ["A version number is required."]})
        dry_run = _flag(request, "dry_run")
        try:
            # The raw body: parse_backup reads YAML and JSON and names bad fields itself.
            # Read from the stream: request.body holds any body to the API's usual limit
            # (DATA_UPLOAD_MAX_MEMORY_SIZE); a backup may be 2 MiB, a bound the request-body
            # middleware has already enforced (common.request_limits).
            backup = parse_backup(request.stream.read() if request.stream is not None else b"")
            result = gpu_config_import(
                backup=backup,
                user=request.user,
                dry_run=dry_run,
                expected_version=expected_version,
            )
        except BackupError as exc:
            raise ValidationError(
                {path or "file": [message] for path, message in exc.errors}
            ) from exc
        return Response(
            {
                "success": True,
                "dry_run": result.dry_run,
                "base_version": result.base_version,
                "version": result.new_version,
                "changes": list(result.changes),
                "warnings": list(result.warnings),
                "config_warnings": list(result.config_warnings),
            }
        )
