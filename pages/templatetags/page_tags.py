"""Template helpers of the Settings pages (``{% load page_tags %}``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import template

register = template.Library()


@register.filter
def for_service(by_service: Mapping[str, Any] | None, service: str) -> Any:
    """``{{ running|for_service:row.service }}``: that service's entry, or None."""
    if not by_service:
        return None
    return by_service.get(service)
