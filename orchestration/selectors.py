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

from devices.services import gpu_sample
from gpuconfig import selectors as config_selectors
from gpuconfig.domain import Configuration
from gpuconfig.models import ConfigVersion
from gpuconfig.registry import RegistryError, load_registry
from orchestration import fanout, hosts_observed, podman
from orchestration.models import (
    ACTIVE_RUN_STATUSES,
    ApplyCommand,
    ApplyRun,
    RunKind,
    RunStatus,
    StepStatus,
)
from orchestration.observed import Mismatch, observed_service
from orchestration.probe import compose_tool
from orchestration.stale_runs import reap_stale_runs_on_read, stalled_run_notice


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
        # Said while the run is active and its worker has gone quiet (stale_runs).
        "worker_notice": stalled_run_notice(run),
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


def _applied_configuration() -> Configuration | None:
    applied = config_selectors.latest_applied_version()
    return config_selectors.version_configuration(applied) if applied else None


def container_health() -> dict[str, Any]:
    """Every managed service's container now: state, health, the GPU it really has, and
    whether it drifted from the applied version (and why)."""
    try:
        managed = load_registry(settings.GPUCONFIG_COMPOSE_FILE).names()
    except RegistryError as exc:
        return _unavailable(str(exc), str(exc))
    try:
        compose_tool()
        states = podman.inspect_services(
            settings.GPUCONFIG_COMPOSE_PROJECT, managed, env=os.environ
        )
    except (podman.ComposeUnavailable, podman.PodmanCommandError) as exc:
        return _unavailable(str(exc), f"Container status unavailable: {exc}")
    applied = _applied_configuration()
    uuids = {r.index: r.uuid for r in gpu_sample().readings}
    # Services applied to another host are judged by that host's report, not by their
    # (stopped) container here.
    elsewhere = hosts_observed.placed_elsewhere(applied)
    containers = {
        name: observed_service(name, states.get(name), applied, uuids)
        for name in managed
        if name not in elsewhere
    }
    if elsewhere and applied is not None:
        containers.update(hosts_observed.observed_elsewhere(applied, elsewhere))
    if applied is not None:
        _flag_running_elsewhere(containers, applied, states)
    return {
        "available": True,
        "unavailable_reason": "",
        "containers": containers,
        "drifted": [name for name, c in containers.items() if c["drifted"]],
        "summary": _summary(containers, applied_known=applied is not None),
    }


def _flag_running_elsewhere(
    containers: dict[str, dict[str, Any]],
    applied: Configuration,
    states: dict[str, podman.ContainerState],
) -> None:
    """A service also running on a host where the applied version does not place it (another
    host's report, or its container here when it is placed elsewhere) has drifted: two copies
    run, and Apply stops the stray one."""
    running = hosts_observed.running_on_hosts(list(containers))
    strays: dict[str, set[int]] = {}
    for name in containers:
        want = applied.get(name)
        placed = fanout.placed_host_number(want) if want is not None else None
        if placed is None:  # not placed by the applied version: no host is wrong for it
            continue
        hosts = set(running.get(name, ()))
        here = states.get(name)
        if here is not None and here.running and placed != 0:
            hosts.add(0)
        if extra := hosts - {placed}:
            strays[name] = extra
    if not strays:
        return
    # One read of the hosts' names for all of them.
    names = fanout.host_names(set().union(*strays.values()))
    for name, extra in strays.items():
        entry = containers[name]
        where = f"also running on {fanout.hosts_phrase(extra, names)}"
        if entry["drifted"]:  # drifted where it is placed too: both said
            entry["drift_reason"] = f"{entry['drift_reason']}; {where}"
        else:
            entry.update(drifted=True, drift=Mismatch.RUNNING_ELSEWHERE.value, drift_reason=where)


def _unavailable(reason: str, summary: str) -> dict[str, Any]:
    return {
        "available": False,
        "unavailable_reason": reason,
        "containers": {},
        "drifted": [],
        "summary": summary,
    }


def _summary(containers: dict[str, dict[str, Any]], *, applied_known: bool) -> str:
    """One line: all is well only when every service runs and none drifted."""
    problems = []
    for name, c in containers.items():
        if c.get("host_state", "online") != "online":
            problems.append(f"{name}: {c['drift_reason']}")
        elif c["drifted"]:
            problems.append(f"{name} drifted: {c['drift_reason']}")
        elif c["state"] == "missing":
            problems.append(f"{name} has no container")
        elif c["state"] != "running":
            problems.append(f"{name} is {c['state']}")
        elif c["health"] == "unhealthy":
            problems.append(f"{name} is unhealthy")
    if problems:
        return "; ".join(problems)
    if not applied_known:
        return "All services running (nothing applied yet)"
    return "All services running as applied"


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
    """The run asked for (or the latest), plus the health of every managed container now.

    A run whose worker died is ended here too (not only by the worker's own beat, which dies
    with it): one query, and a conditional update per stale run."""
    reap_stale_runs_on_read()
    runs = ApplyRun.objects.select_related("version", "previous_version", "requested_by")
    run = runs.filter(pk=run_id).first() if run_id else runs.order_by("-created_at").first()
    return {"run": run_body(run) if run else None, **_shared_container_health(_health_key(run))}


def _health_key(run: ApplyRun | None) -> Hashable:
    """What the shared container read depends on: the files, the run's state and the
    applied version (drift is judged against it)."""
    applied = config_selectors.latest_applied_version()
    return (
        str(settings.GPUCONFIG_COMPOSE_FILE),
        settings.GPUCONFIG_COMPOSE_PROJECT,
        (run.pk, run.status) if run else None,
        applied.pk if applied else None,
    )


def running_services_view() -> dict[str, Any]:
    """What each GPU really holds, from the same shared read as the status (the GPUs API):
    {"per_gpu": {index: [service, ...]}, "drifted": [...], "available": ..., "summary": ...}."""
    run = ApplyRun.objects.order_by("-created_at").only("pk", "status").first()
    health = _shared_container_health(_health_key(run))
    per_gpu: dict[int, list[str]] = {}
    for name, container in health["containers"].items():
        if container["gpu"] is not None and container["state"] == "running":
            per_gpu.setdefault(container["gpu"], []).append(name)
    return {
        "available": health["available"],
        "summary": health["summary"],
        "drifted": health["drifted"],
        "containers": health["containers"],
        "per_gpu": per_gpu,
    }


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


# --- /health: each dependency on its own ---------------------------------------------------

_HEALTH_CACHE_SECONDS = 5.0
_parts_lock = threading.Lock()
_parts_cache: tuple[float, dict[str, Any]] | None = None


def dependency_health() -> dict[str, Any]:
    """The broker, the worker and podman, each "ok" or why not (for /health).

    Cached for a few seconds per process: a worker ping waits up to a second for answers,
    and /health is polled by health checks and load balancers."""
    global _parts_cache
    with _parts_lock:
        if _parts_cache and time.monotonic() - _parts_cache[0] < _HEALTH_CACHE_SECONDS:
            return copy.deepcopy(_parts_cache[1])
        parts = {"broker": _broker_health(), "podman": _podman_health()}
        parts["worker"] = _worker_health() if parts["broker"] == "ok" else "unknown (no broker)"
        _parts_cache = (time.monotonic(), parts)
        return copy.deepcopy(parts)


def reset_dependency_health_cache() -> None:
    global _parts_cache
    with _parts_lock:
        _parts_cache = None


def _broker_health() -> str:
    from config.celery import app

    try:
        with app.connection_for_write(connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=0, timeout=2)
    except Exception as exc:  # kombu's and redis' connection errors have no common base
        return f"unavailable: {exc.__class__.__name__}"
    return "ok"


def _worker_health() -> str:
    from config.celery import app

    try:
        replies = app.control.ping(timeout=1.0)
    except Exception as exc:  # as above
        return f"unavailable: {exc.__class__.__name__}"
    return "ok" if replies else "no worker answered a ping within 1 s"


def _podman_health() -> str:
    try:
        compose_tool()
    except podman.ComposeUnavailable as exc:
        return f"unavailable: {str(exc)[:200]}"
    return "ok"


def apply_readiness() -> tuple[bool, str]:
    """Whether Apply & Restart can work here now, and if not, why and what to do (the
    compose probe's sentence, in the words of where the app runs). Cached with the probe,
    so the page may ask on every render; the service still checks again when pressed."""
    try:
        compose_tool()
    except podman.ComposeUnavailable as exc:
        return False, str(exc)
    return True, ""


def planned_moves(target: Configuration, services: list[str]) -> dict[str, str]:
    """How Apply would move each of ``services`` to ``target`` now, in the run's own words
    ("moves without a gap: a second copy starts on GPU 1 ..." or "restarts, its target GPU
    has no room for a second copy ..."), for the preview and Apply's confirmation."""
    if not services:
        return {}
    # Imported here: the handover module builds on the executor, which a read need not load.
    from orchestration.handover import handover_choices

    applied = config_selectors.latest_applied_version()
    previous = config_selectors.version_configuration(applied) if applied else None
    decided = handover_choices(services, target=target, previous=previous)
    return {name: choice.reason for name, choice in decided.choices.items()}
