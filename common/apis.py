"""API plumbing every app's views share: bodies bounded before parsing, unknown keys refused."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.views import APIView

from common.request_limits import body_limit


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."


class BoundedBodyApi(APIView):
    """Refuse oversized bodies before parsing: DRF reads the request as a stream, which
    bypasses Django's DATA_UPLOAD_MAX_MEMORY_SIZE check."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        # The limit the request-body middleware applies first (one rule: a backup import
        # may be 2 MiB); this check stands should that middleware be left out.
        limit, _upload = body_limit(request.path)
        if length > limit:
            raise BodyTooLarge(
                f"The request body is {length:,} bytes; the limit is {limit:,} bytes. "
                "Nothing was read or changed."
            )


class StrictSerializer(serializers.Serializer):
    """Unknown keys are errors, not silently ignored: a typo ("gpu" for "gpu_index") must
    not save a configuration that quietly differs from what the user meant."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise ValidationError(
                    {
                        key: [f"Unknown field; expected one of: {', '.join(self.fields)}."]
                        for key in unknown
                    }
                )
        return super().to_internal_value(data)
