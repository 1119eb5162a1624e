"""API request throttling per user, with the rate read from settings when a request arrives.

Only logged-in users (session or token) get past the API's permission check, which DRF makes
before throttling: anonymous callers get a 403 whatever their rate, so they are not counted.

DRF's own classes copy the rates once at import, so neither an operator's restart-free
reconfiguration nor a test's ``settings`` fixture would reach them.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import UserRateThrottle


class ApiUserThrottle(UserRateThrottle):
    """Per logged-in user (or token): GPUCONFIG_API_RATE_USER, e.g. "1200/minute"."""

    def get_rate(self) -> str | None:
        return settings.GPUCONFIG_API_RATE_USER or None
