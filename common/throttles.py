"""API request throttling per user, with the rate read from settings when a request arrives.

Only logged-in users (session or token) get past the API's permission check, which DRF makes
before throttling: anonymous callers get a 403 whatever their rate, so they are not counted.

DRF's own classes copy the rates once at import, so neither an operator's restart-free
reconfiguration nor a test's ``settings`` fixture would reach them. They also read the
user's request history from the cache, append to it and write it back: concurrent requests
overwrite each other's entries, and 16 clients got 3,782 requests through a limit of 1,200.
This class counts with the cache's atomic ``incr`` instead (Redis INCR in the stack; the
per-process memory cache of the embedded default increments under a lock, which is exact
for its single web process).
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.throttling import UserRateThrottle


class ApiUserThrottle(UserRateThrottle):
    """Per logged-in user (or token): GPUCONFIG_API_RATE_USER, e.g. "1200/minute".

    A sliding-window counter: one counter per user and fixed window, and a request is let
    through while this window's count plus the previous window's, weighted by how much of
    it still overlaps the last ``duration`` seconds, stays within the limit. Unlike a bare
    fixed window it does not let 2x the rate through around a window's edge.
    """

    # Set by DRF's __init__ from the rate (parse_rate); its stubs do not declare them.
    num_requests: int | None
    duration: int | None
    wait_seconds: float | None = None

    def get_rate(self) -> str | None:
        return settings.GPUCONFIG_API_RATE_USER or None

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None or self.num_requests is None or self.duration is None:
            return True
        ident = self.get_cache_key(request, view)
        if ident is None:
            return True
        now = self.timer()
        window, into = divmod(now, self.duration)
        current = f"{ident}:{int(window)}"
        # A window's counter must outlive the next window, which weighs it.
        count = _increment(current, timeout=2 * self.duration + 1)
        earlier: int = cache.get(f"{ident}:{int(window) - 1}", 0)
        overlap = 1 - into / self.duration
        if count + earlier * overlap <= self.num_requests:
            return True
        # Refused requests are not counted: the counter is what got through. Until this
        # decrement lands, others see one more and may be refused too (never let through).
        cache.decr(current)
        self.wait_seconds = _wait(
            count=count,
            earlier=earlier,
            limit=self.num_requests,
            duration=self.duration,
            into=into,
            overlap=overlap,
        )
        return False

    def wait(self) -> float | None:
        return self.wait_seconds


def _increment(key: str, *, timeout: int) -> int:
    """Add one to the counter ``key`` atomically, creating it at zero if missing."""
    for _ in range(3):
        cache.add(key, 0, timeout=timeout)  # no-op when it exists: add is atomic too
        try:
            return int(cache.incr(key))
        except ValueError:  # evicted or expired between add and incr: create it again
            continue
    raise RuntimeError(f"the cache keeps dropping the throttle counter {key!r}")


def _wait(
    *, count: int, earlier: int, limit: int, duration: int, into: float, overlap: float
) -> float:
    """Seconds until a request would fit again, for the 429's Retry-After."""
    if count > limit or earlier == 0:
        # This window alone is full; the next one starts under its whole weight.
        return duration - into + duration / limit
    # The previous window's share shrinks as time passes: when does it leave room?
    needed_overlap = (limit - count) / earlier
    return max(1.0, math.ceil((overlap - needed_overlap) * duration))
