"""The podman probe (issue 12): a failing podman-compose is asked once for many readers, and
again only after a short interval."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from orchestration import podman, probe
from orchestration.services import forget_probe


@pytest.fixture(autouse=True)
def _fresh_probe() -> Iterator[None]:
    forget_probe()
    yield
    forget_probe()


def test_a_failing_podman_probe_is_remembered_briefly(tmp_path, settings, monkeypatch) -> None:
    # A compose command that fails slowly and counts how often it is started.
    calls = tmp_path / "calls"
    fake = tmp_path / "podman-compose"
    fake.write_text(f"#!/bin/sh\necho started >> {calls}\nsleep 0.3\nexit 1\n")
    fake.chmod(0o755)
    settings.GPUCONFIG_COMPOSE_COMMAND = [str(fake)]
    errors: list[str] = []

    def read() -> None:
        try:
            probe.compose_tool()
        except podman.ComposeUnavailable as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=read) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    read()

    assert len(errors) == 21
    assert len(set(errors)) == 1 and "did not report a podman-compose version" in errors[0]
    assert calls.read_text().count("started") == 1, "one probe for all of them"

    monkeypatch.setattr(probe, "PROBE_FAILURE_CACHE_SECONDS", 0.0)
    read()
    assert calls.read_text().count("started") == 2, "after the interval, podman is asked again"
