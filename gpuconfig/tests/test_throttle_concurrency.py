"""The per-user API throttle counts atomically (issue 17, item 4).

DRF's throttle read the user's history from the cache, appended and wrote it back: 16
concurrent clients overwrote each other's entries and got 3,782 requests through a limit of
1,200. Here 16 threads hammer the API as one user, against the real Redis of the stack's
cache and against the embedded default's per-process memory cache.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connections
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

REDIS_URL = os.environ.get("GPUCONFIG_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
URL = "/api/system/gpus"
LIMIT = 40
THREADS = 16
PER_THREAD = 12  # 192 requests for a limit of 40


@pytest.fixture(params=["redis", "memory"])
def cache_backend(request, settings) -> Iterator[str]:
    if request.param == "redis":
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": REDIS_URL,
                "KEY_PREFIX": "throttle-test",
            }
        }
    cache.clear()
    yield request.param
    cache.clear()


def _hammer(user: User) -> Counter[int]:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def client_thread() -> None:
        client = APIClient()
        client.force_authenticate(user)  # no session lookup: only the throttle is shared
        try:
            start.wait()
            for _ in range(PER_THREAD):
                code = client.get(URL).status_code
                with lock:
                    statuses[code] += 1
        finally:
            connections.close_all()

    threads = [threading.Thread(target=client_thread) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_sixteen_concurrent_clients_of_one_user_get_exactly_the_limit(
    cache_backend, settings, member_user
):
    # Per hour: the run cannot straddle enough of a window edge to let one more through.
    settings.GPUCONFIG_API_RATE_USER = f"{LIMIT}/hour"

    statuses = _hammer(member_user)

    assert statuses == {200: LIMIT, 429: THREADS * PER_THREAD - LIMIT}, cache_backend


def test_the_429_says_when_to_come_back_and_other_users_are_not_counted(
    cache_backend, settings, member_api, staff_api
):
    settings.GPUCONFIG_API_RATE_USER = "3/hour"
    codes = [member_api.get(URL).status_code for _ in range(4)]
    refused = member_api.get(URL)

    assert codes == [200, 200, 200, 429]
    assert refused.status_code == 429
    assert refused.json()["error"].startswith("Request was throttled. Expected available in")
    # Until the hour's window ends, and a third into the next while this one still weighs.
    assert 0 < int(refused["Retry-After"]) <= 3600 + 3600 / 3
    assert staff_api.get(URL).status_code == 200, "counted per user"


def test_the_api_throttles_each_user(settings, member_api, staff_api):
    cache.clear()  # throttle counts live in the cache: none left by an earlier test
    settings.GPUCONFIG_API_RATE_USER = "2/minute"
    assert [member_api.get("/api/system/gpus").status_code for _ in range(3)] == [200, 200, 429]
    assert staff_api.get("/api/system/gpus").status_code == 200, "counted per user"
