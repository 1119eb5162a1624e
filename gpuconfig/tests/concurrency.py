"""Requests sent all at once from real threads, each on its own database connection: the
races of saves (test_save_races.py) and of rollbacks (orchestration/tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User
from django.db import connections
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def all_at_once(count: int, request: Callable[[], Any]) -> list[Any]:
    """Run ``request`` in ``count`` threads released together; their responses."""
    barrier = threading.Barrier(count)
    responses: list[Any] = [None] * count

    def worker(i: int) -> None:
        try:
            barrier.wait()
            responses[i] = request()
        finally:
            connections.close_all()  # this thread's connection

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return responses


def token_clients(user: User) -> Callable[[], APIClient]:
    """A new API client for ``user`` per call (a thread's own), all with one token."""
    token = Token.objects.create(user=user).key
    return lambda: APIClient(headers={"Authorization": f"Token {token}"})
