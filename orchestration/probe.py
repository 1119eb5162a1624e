"""The checked compose command, probed once and cached (probing runs two subprocesses)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from django.conf import settings

from orchestration import podman

PROBE_CACHE_SECONDS = 30.0
# The worker runs a run only after the web process (or the CLI) has just probed the same
# command, so it may rely on an older probe of its own; a podman that vanished since shows
# up as a failed compose run and a rollback.
WORKER_PROBE_CACHE_SECONDS = 600.0
# A failed probe is remembered too, briefly: with podman slow and broken, every status read
# would otherwise wait for its own two subprocesses (20 reads: 40 processes, 6 s each).
PROBE_FAILURE_CACHE_SECONDS = 10.0

_probe_lock = threading.Lock()
_probe_cache: dict[tuple[str, ...], tuple[float, podman.ComposeTool]] = {}
_failure_cache: dict[tuple[str, ...], tuple[float, podman.ComposeUnavailable]] = {}
# One probe at a time: requests arriving while one runs wait for its answer, not run their own.
_probing = threading.Lock()


def compose_dir() -> Path:
    """Where compose commands run: the folder of the AI system's compose file."""
    return Path(settings.GPUCONFIG_COMPOSE_FILE).parent


def compose_tool(*, max_age_s: float = PROBE_CACHE_SECONDS) -> podman.ComposeTool:
    """The checked compose command (cached: probing runs two subprocesses, ~0.3 s)."""
    command = tuple(settings.GPUCONFIG_COMPOSE_COMMAND)
    with _probing:
        with _probe_lock:
            cached = _probe_cache.get(command)
            if cached and time.monotonic() - cached[0] < max_age_s:
                return cached[1]
            failed = _failure_cache.get(command)
            if failed and time.monotonic() - failed[0] < PROBE_FAILURE_CACHE_SECONDS:
                raise podman.ComposeUnavailable(str(failed[1]))
        try:
            tool = podman.probe_compose(command, cwd=compose_dir(), env=os.environ)
        except podman.ComposeUnavailable as exc:
            with _probe_lock:
                _failure_cache[command] = (time.monotonic(), exc)
            raise
        with _probe_lock:
            _probe_cache[command] = (time.monotonic(), tool)
            _failure_cache.pop(command, None)
        return tool


def forget_probe() -> None:
    with _probe_lock:
        _probe_cache.clear()
        _failure_cache.clear()
