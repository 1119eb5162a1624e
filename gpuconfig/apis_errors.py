"""One error shape for every API failure: ``{"success": false, "error": ..., "errors": {...}}``."""

from __future__ import annotations

import logging
from typing import Any

from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
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
