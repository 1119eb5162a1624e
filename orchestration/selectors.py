"""Reads: an apply run's progress and the state of every managed container now."""

from __future__ import annotations

import copy
import os
import threading
import time
import uuid
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from gpuconfig import selectors as config_selectors
from gpuconfig.models import ConfigVersion
from gpuconfig.registry import RegistryError, load_registry
from orchestration import podman
from orchestration.models import (
    ACTIVE_RUN_STATUSES,
    ApplyCommand,
    ApplyRun,
    RunKind,
    RunStatus,
    StepStatus,
)
from orchestration.probe import compose_tool


def command_body(command: ApplyCommand) -> dict[str, Any]:
    return {
        "argv": command.argv,
        "command": command.command_line,
        "exit_code": command.exit_code,
        "timed_out": command.timed_out,
        "started_at": command.started_at,
        "duration_s": command.duration_s,
        "outcome": command.outcome,
        "output": command.output,
    }


def run_body(run: ApplyRun) -> dict[str, Any]:
    commands = list(run.commands.all())
    return {
        "id": str(run.id),
        "kind": run.kind,
        "status": run.status,
        "active": run.is_active,
        "version": run.version.number,
        "previous_version": run.previous_version.number if run.previous_version else None,
        "requested_by": run.requested_by.get_username() if run.requested_by else None,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "heartbeat_at": run.heartbeat_at,
        "error": run.error,
        "commands": [command_body(c) for c in commands],
        # The commands as one text, as before there were rows (one line per command; the
        # output of each after a "$ command" line).
        "command": "\n".join(c.command_line for c in commands),
        "output": "\n".join(f"$ {c.command_line}\n{c.output}\n[{c.outcome}]" for c in commands),
        "steps": [
            {
                "service": step.service_name,
                "status": step.status,
                "from_gpu": step.from_gpu,
                "to_gpu": step.to_gpu,
                "message": step.message,
                "updated_at": step.updated_at,
            }
            for step in run.steps.all()
        ],
    }


def _gpu_of(state: podman.ContainerState) -> int | None:
    for device in state.cdi_devices:
        if device.startswith("nvidia.com/gpu="):
            index = device.partition("=")[2]
            return int(index) if index.isdigit() else None
    return None


def container_health() -> dict[str, Any]:
    """Every managed service's container now: state, health and the GPU it really has."""
    try:
        managed = load_registry(settings.GPUCONFIG_COMPOSE_FILE).names()
    except RegistryError as exc:
        return {
            "available": False,
            "unavailable_reason": str(exc),
            "containers": {},
            "summary": str(exc),
        }
    try:
        compose_tool()
        states = podman.inspect_services(
            settings.GPUCONFIG_COMPOSE_PROJECT, managed, env=os.environ
        )
    except (podman.ComposeUnavailable, podman.PodmanCommandError) as exc:
        return {
            "available": False,
            "unavailable_reason": str(exc),
            "containers": {},
            "summary": f"Container status unavailable: {exc}",
        }
    containers: dict[str, Any] = {}
    not_ok: list[str] = []
    for name in managed:
        state = states.get(name)
        if state is None:
            containers[name] = {"state": "missing", "health": None, "gpu": None, "id": None}
            not_ok.append(f"{name} has no container")
            continue
        containers[name] = {
            "state": state.status,
            "health": state.health,
            "gpu": _gpu_of(state),
            "id": state.id[:12],
        }
        if not state.running:
            not_ok.append(f"{name} is {state.status}")
        elif state.health == "unhealthy":
            not_ok.append(f"{name} is unhealthy")
    summary = "All services running" if not not_ok else "; ".join(not_ok)
    return {
        "available": True,
        "unavailable_reason": "",
        "containers": containers,
        "summary": summary,
    }


# Container state for status reads, shared by every request of this process: podman runs at
# most once per GPUCONFIG_SAMPLE_SECONDS on this read path (50 clients polling the status would
# otherwise spawn 50 `podman ps` a second), and callers that arrive during a read wait for it
# instead of starting their own. A change of the run's state reads again at once, so the
# status that reports a finished run also shows the containers it left.
_health_lock = threading.Lock()
_health_cache: tuple[float, Hashable, dict[str, Any]] | None = None


def reset_container_health_cache() -> None:
    global _health_cache
    with _health_lock:
        _health_cache = None


def _shared_container_health(key: Hashable) -> dict[str, Any]:
    global _health_cache
    with _health_lock:
        cached = _health_cache
        if (
            cached is not None
            and cached[1] == key
            and time.monotonic() - cached[0] < settings.GPUCONFIG_SAMPLE_SECONDS
        ):
            return copy.deepcopy(cached[2])
        body = container_health()
        _health_cache = (time.monotonic(), key, body)
        return copy.deepcopy(body)


def apply_status(run_id: uuid.UUID | None = None) -> dict[str, Any]:
    """The run asked for (or the latest), plus the health of every managed container now."""
    runs = ApplyRun.objects.select_related("version", "previous_version", "requested_by")
    run = runs.filter(pk=run_id).first() if run_id else runs.order_by("-created_at").first()
    key = (
        str(settings.GPUCONFIG_COMPOSE_FILE),
        settings.GPUCONFIG_COMPOSE_PROJECT,
        (run.pk, run.status) if run else None,
    )
    return {"run": run_body(run) if run else None, **_shared_container_health(key)}


def run_is_active() -> bool:
    """Whether an apply or rollback is running now (the page shows Apply disabled then)."""
    return ApplyRun.objects.filter(status__in=ACTIVE_RUN_STATUSES).exists()


def rollback_offer(run: dict[str, Any] | None) -> int | None:
    """The version a manual rollback would go back to, when the page should offer one: the
    latest run has ended without rolling back already, and an earlier applied version exists
    (never after a first apply, failed or not). ``run``: ``apply_status()["run"]``."""
    if not run or run["active"]:
        return None
    target = config_selectors.rollback_target()
    if target is None or run["status"] == RunStatus.ROLLED_BACK:
        return None
    return target.number


@dataclass(frozen=True)
class FailedVersion:
    """The newest saved version, whose last apply was rolled back automatically, and the
    applied version that runs instead."""

    failed: ConfigVersion
    running: ConfigVersion


def failed_current_version() -> FailedVersion | None:
    """The newest saved version when its last apply rolled back and another version runs
    (the page offers to discard it, and Apply says it would run it again)."""
    latest = config_selectors.latest_version()
    running = config_selectors.latest_applied_version()
    if latest is None or running is None or latest.pk == running.pk:
        return None
    last = ApplyRun.objects.filter(version=latest, kind=RunKind.APPLY).order_by("-created_at")
    run = last.only("status").first()
    if run is None or run.status != RunStatus.ROLLED_BACK:
        return None
    return FailedVersion(failed=latest, running=running)


# Steps that finished, and how far each state is along the run (for the progress bar).
_STEP_DONE = (StepStatus.HEALTHY, StepStatus.FAILED, StepStatus.ROLLED_BACK)
_STEP_WEIGHT = {StepStatus.PENDING: 0.0, StepStatus.RECREATING: 0.25, StepStatus.VERIFYING: 0.5}


def step_progress(steps: list[dict[str, Any]], *, active: bool) -> dict[str, Any]:
    """Counts for the run summary: one command recreates every changed service, then each
    is checked; a step counts as done when its check has finished."""
    done = sum(1 for s in steps if s["status"] in _STEP_DONE)
    recreating = not done and all(
        s["status"] in (StepStatus.PENDING, StepStatus.RECREATING) for s in steps
    )
    weight = sum(_STEP_WEIGHT.get(s["status"], 1.0) for s in steps)
    return {
        "steps_done": done,
        "steps_total": len(steps),
        "steps_recreating": bool(steps) and recreating,
        "steps_percent": round(100 * weight / len(steps)) if steps else (0 if active else 100),
    }
