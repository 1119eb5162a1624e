"""Template helpers for measured VRAM (``{% load vram_tags %}``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import template

register = template.Library()


@register.filter
def measured_for(measured: Mapping[str, Any] | None, service: str) -> Any:
    """``{{ measured|measured_for:row.service }}``: that service's entry, or None."""
    if not measured:
        return None
    return measured.get(service)
