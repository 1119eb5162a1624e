"""One error shape for every API failure: ``{"success": false, "error": ..., "errors": {...}}``."""

from __future__ import annotations

import logging
from typing import Any

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from common.errors import FieldsRefusal, Refusal

logger = logging.getLogger(__name__)


class _Refused(APIException):
    def __init__(self, refusal: Refusal):
        super().__init__(refusal.user_message)
        self.status_code = refusal.status_code


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    # The layers' refusals carry their status and sentence (common.errors): mapped here only.
    if isinstance(exc, FieldsRefusal):
        exc = ValidationError(exc.errors)
    elif isinstance(exc, Refusal):
        exc = _Refused(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        # Unexpected: log the traceback for the operator, show the client a sentence, not a trace.
        logger.exception("Unhandled error in %s", context.get("view"))
        return Response(
            {"success": False, "error": "Internal error; the server log has the details."},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, ValidationError):
        detail = response.data
        response.data = {
            "success": False,
            "error": "Invalid request: " + _first_message(detail),
            "errors": detail,
        }
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"success": False, "error": str(response.data["detail"])}
    return response


def _first_message(detail: Any) -> str:
    """The first human message in a nested DRF error structure, with its field path."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = _first_message(value)
            return inner if key == "non_field_errors" else f"{key}: {inner}"
    if isinstance(detail, list):
        for item in detail:
            if item:
                return _first_message(item)
    return str(detail)


# --- the OpenAPI schema: the answers every operation can give ------------------------------


# The one error body, for the schema: every API names this object, never a copy of it (two
# inline copies with one name make drf-spectacular warn, and the schema ambiguous).
ApiErrorSerializer = inline_serializer(
    "ApiError",
    fields={
        "success": serializers.BooleanField(),
        "error": serializers.CharField(),
        "errors": serializers.DictField(required=False),
    },
)


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "success": {"type": "boolean"},
        "error": {"type": "string"},
        "errors": {"type": "object"},
    },
    "required": ["success", "error"],
}
# Every operation: a bad token (401), no login or not staff (403), too many requests (429).
_EVERY_OPERATION = {
    "401": "Invalid or expired token.",
    "403": "Not logged in, or a change by a user who is not staff.",
    "429": "Too many requests from this user; retry after the time the message gives.",
}
# Operations that take a body: too large (413) or not JSON (415).
_WITH_A_BODY = {
    "400": "Malformed JSON or invalid fields; nothing was written.",
    "413": "The body is over the size limit (GPUCONFIG_MAX_BODY_BYTES).",
    "415": "Not JSON: the API reads application/json only.",
}


def document_common_errors(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular hook: add the answers DRF gives before any view code runs
    (authentication, permission, throttling, parsing) to every operation, in the one error
    shape, so that the schema describes every status a client can really get."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ApiError", _ERROR_SCHEMA)
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}
    for methods in result.get("paths", {}).values():
        for operation in methods.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            answers = dict(_EVERY_OPERATION)
            if "requestBody" in operation:
                answers |= _WITH_A_BODY
            elif operation.get("parameters"):
                answers["400"] = "An invalid query parameter; nothing was done."
            for status_code, description in answers.items():
                operation["responses"].setdefault(
                    status_code, {"description": description, "content": reference}
                )
    return result
