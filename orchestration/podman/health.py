"""Health checks on demand: there is no systemd here to run podman's health-check timers, so
``podman healthcheck run`` runs a check when asked (exit 0 healthy, 1 unhealthy, 125 no check
or not running)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestration.podman.commands import _environment, _run
from orchestration.podman.containers import _has_healthcheck, _inspect_one


def run_healthcheck(
    container_id: str, *, timeout_s: float, env: Mapping[str, str] | None = None
) -> bool | None:
    """Run the container's health check once: True healthy, False not, None when it has none.

    A container that is not running, or is gone, counts as not healthy.
    """
    run_env = _environment(env)
    data = _inspect_one(container_id, env=run_env)
    if data is None:
        return False
    if not _has_healthcheck(data):
        return None
    return _check_once(container_id, env=run_env, timeout_s=timeout_s)


def wait_healthy(
    container_id: str,
    *,
    timeout_s: float,
    interval_s: float = 0.5,
    env: Mapping[str, str] | None = None,
    assume_running_with_check: bool = False,
) -> tuple[bool, str]:
    """Run the health check until it passes, podman calls it unhealthy, or time runs out.

    Returns whether the container is healthy (running, for one without a health check) and a
    sentence saying why, for the Apply log. A failing check is retried until podman's own
    verdict (its retries and start period apply) turns the container ``unhealthy``.
    """
    run_env = _environment(env)
    deadline = time.monotonic() + timeout_s
    # When the caller has just inspected the container, try the check straight away and only
    # look closer when it fails (this saves a podman call per healthy service).
    if assume_running_with_check and _check_once(container_id, env=run_env, timeout_s=timeout_s):
        return True, "healthy"
    while True:
        data = _inspect_one(container_id, env=run_env)
        if data is None:
            return False, f"container {container_id[:12]} no longer exists"
        state = data.get("State") or {}
        if not state.get("Running"):
            return False, _not_running_reason(container_id, state)
        if not _has_healthcheck(data):
            return True, "running; it has no health check"

        if _check_once(container_id, env=run_env, timeout_s=deadline - time.monotonic()):
            return True, "healthy"
        health = _inspect_one(container_id, env=run_env) or {}
        health_state = (health.get("State") or {}).get("Health") or {}
        if health_state.get("Status") == "unhealthy":
            return False, (
                f"unhealthy after {health_state.get('FailingStreak', '?')} failed checks"
                f"{_last_check_output(health_state)}"
            )
        if time.monotonic() + interval_s >= deadline:
            return False, (
                f"not healthy within {timeout_s:g} s (health: "
                f"{health_state.get('Status') or 'unknown'}){_last_check_output(health_state)}"
            )
        time.sleep(interval_s)


def check_health_once(
    container: str, *, timeout_s: float, env: Mapping[str, str] | None = None
) -> bool:
    """``podman healthcheck run CONTAINER`` (an id or a name), once, with no inspect first:
    True only when it passed. For a caller that knows the container has a check."""
    return _check_once(container, env=_environment(env), timeout_s=timeout_s)


def _check_once(container_id: str, *, env: Mapping[str, str], timeout_s: float) -> bool:
    """``podman healthcheck run``: exit 0 healthy; anything else is not."""
    result = _run(
        ("podman", "healthcheck", "run", container_id),
        cwd=Path("/"),
        env=env,
        timeout_s=max(timeout_s, 1.0),
    )
    return result.ok


def _not_running_reason(container_id: str, state: Mapping[str, Any]) -> str:
    reason = f"container {container_id[:12]} is {state.get('Status', 'not running')}"
    if state.get("Status") == "exited":
        reason += f" (exit code {state.get('ExitCode')})"
    if state.get("Error"):
        reason += f": {state['Error']}"
    return reason


def _last_check_output(health_state: Mapping[str, Any]) -> str:
    log = health_state.get("Log") or []
    output = (log[-1].get("Output") or "").strip() if log else ""
    return f"; last check said: {output[-300:]}" if output else ""
