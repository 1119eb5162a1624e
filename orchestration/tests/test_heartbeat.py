"""A run's heartbeat outlives a database blip: a heartbeat that stopped at the first failed
write let a working run be reaped as interrupted a minute later (seen on the production
stack, when the database's name did not resolve for a moment while containers were moved)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from gpuconfig.models import ConfigVersion
from orchestration import executor
from orchestration.models import ApplyRun, RunStatus

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_heartbeat_keeps_beating_after_a_failed_write(monkeypatch):
    version = ConfigVersion.objects.create(number=1, strategy="manual", assignments={})
    long_ago = timezone.now() - timedelta(minutes=5)
    run = ApplyRun.objects.create(version=version, status=RunStatus.RUNNING)
    ApplyRun.objects.filter(pk=run.pk).update(heartbeat_at=long_ago)

    real_filter = ApplyRun.objects.filter
    failures = []

    def filter_failing_once(*args, **kwargs):
        # The outermost boundary a blip reaches the heartbeat through: its query.
        if not failures:
            failures.append(True)
            raise OperationalError("failed to resolve host 'gpuconfig-postgres'")
        return real_filter(*args, **kwargs)

    monkeypatch.setattr(executor, "HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(executor.ApplyRun.objects, "filter", filter_failing_once)
    with executor._heartbeat(run.pk):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if real_filter(pk=run.pk, heartbeat_at__gt=long_ago).exists():
                break
            time.sleep(0.05)

    assert failures, "the blip was not met"
    assert ApplyRun.objects.get(pk=run.pk).heartbeat_at > long_ago
