"""Apply & Restart: write the override, recreate only the changed services, verify, roll back.

The run's state lives in ApplyRun/ServiceStep rows moved forward by conditional updates
(``filter(pk=..., status=old).update(...)``), so two workers can never both own a run, and a
worker killed mid-run leaves a heartbeat that goes stale and is reported as interrupted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from gpuconfig import selectors as config_selectors
from gpuconfig.changes import config_changes
from gpuconfig.config_files import budget_environment, render_override
from gpuconfig.domain import Configuration, ResolvedAssignment
from gpuconfig.files import write_atomic
from gpuconfig.models import ConfigVersion
from gpuconfig.registry import RegistryError, load_registry
from gpuconfig.services import gpu_config_restore, saving_user
from orchestration import podman
from orchestration.models import (
    ACTIVE_RUN_STATUSES,
    ApplyRun,
    RunKind,
    RunStatus,
    ServiceStep,
    StepStatus,
)
from orchestration.override import services_with_own_devices

logger = logging.getLogger(__name__)

OVERRIDE_FILE = "docker-compose.gpu-override.yml"
PREVIOUS_SUFFIX = ".previous"
HEARTBEAT_SECONDS = 2.0


class ApplyRefused(Exception):
    """The apply cannot start; nothing was written. ``status_code`` is what the API answers."""

    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.status_code = status_code


def override_path() -> Path:
    return Path(settings.GPUCONFIG_OUTPUT_DIR) / OVERRIDE_FILE


def compose_dir() -> Path:
    return Path(settings.GPUCONFIG_COMPOSE_FILE).parent


# --- probing ------------------------------------------------------------------------------

_probe_lock = threading.Lock()
_probe_cache: dict[tuple[str, ...], tuple[float, podman.ComposeTool]] = {}
PROBE_CACHE_SECONDS = 30.0
# The worker runs a run only after the web process (or the CLI) has just probed the same
# command, so it may rely on an older probe of its own; a podman that vanished since shows
# up as a failed compose run and a rollback.
WORKER_PROBE_CACHE_SECONDS = 600.0


def compose_tool(*, max_age_s: float = PROBE_CACHE_SECONDS) -> podman.ComposeTool:
    """The checked compose command (cached: probing runs two subprocesses, ~0.3 s)."""
    command = tuple(settings.GPUCONFIG_COMPOSE_COMMAND)
    with _probe_lock:
        cached = _probe_cache.get(command)
        if cached and time.monotonic() - cached[0] < max_age_s:
            return cached[1]
    tool = podman.probe_compose(command, cwd=compose_dir(), env=os.environ)
    with _probe_lock:
        _probe_cache[command] = (time.monotonic(), tool)
    return tool


def forget_probe() -> None:
    with _probe_lock:
        _probe_cache.clear()


# --- starting a run -----------------------------------------------------------------------


def _check_base_file(managed: Sequence[str]) -> None:
    registry = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
    clashing = services_with_own_devices(registry.compose, managed)
    if clashing:
        raise ApplyRefused(
            f"{settings.GPUCONFIG_COMPOSE_FILE} already gives {', '.join(clashing)} devices of "
            "its own; podman-compose would add the override's GPU to them instead of replacing "
            "them. Remove `devices:` / deploy.resources.reservations.devices from those "
            "services in the base file and let GPU Config assign them.",
            503,
        )


def _start_run(
    *,
    kind: RunKind,
    target: ConfigVersion,
    previous: ConfigVersion | None,
    user: AbstractBaseUser | AnonymousUser | None,
    enqueue: bool,
) -> ApplyRun:
    changes = config_changes(
        config_selectors.version_configuration(previous) if previous else None,
        config_selectors.version_configuration(target),
    )
    try:
        with transaction.atomic():
            run = ApplyRun.objects.create(
                kind=kind,
                version=target,
                previous_version=previous,
                requested_by=saving_user(user),
            )
            ServiceStep.objects.bulk_create(
                ServiceStep(
                    run=run,
                    service_name=c.service,
                    from_gpu=c.before.container_gpu,
                    to_gpu=c.after.container_gpu,
                )
                for c in changes
            )
            if enqueue:
                transaction.on_commit(lambda: _enqueue(run.pk))
    except IntegrityError:
        # The partial unique index allows one active run: the database settles the race.
        raise ApplyRefused(
            "Another apply is already running; wait for it to finish.", 409
        ) from None
    return run


def _enqueue(run_id: Any) -> None:
    from orchestration.tasks import apply_run_task  # the task module imports this one

    apply_run_task.delay(str(run_id))


def _preflight() -> None:
    apply_runs_reap_stale()
    if ApplyRun.objects.filter(status__in=ACTIVE_RUN_STATUSES).exists():
        raise ApplyRefused("Another apply is already running; wait for it to finish.", 409)
    try:
        _check_base_file(load_registry(settings.GPUCONFIG_COMPOSE_FILE).names())
    except RegistryError as exc:
        raise ApplyRefused(f"The compose file cannot be used: {exc}", 503) from exc
    try:
        compose_tool()
    except podman.ComposeUnavailable as exc:
        raise ApplyRefused(f"Cannot apply: {exc}", 503) from exc


def apply_run_start(
    *, user: AbstractBaseUser | AnonymousUser | None, enqueue: bool = True
) -> ApplyRun:
    """Start applying the latest saved version; the Celery worker does the work
    (``enqueue=False``: the caller runs ``apply_run_execute`` itself, as the CLI does)."""
    _preflight()
    target = config_selectors.latest_version()
    if target is None:
        raise ApplyRefused("Nothing to apply: save a configuration first.", 400)
    return _start_run(
        kind=RunKind.APPLY,
        target=target,
        previous=config_selectors.latest_applied_version(),
        user=user,
        enqueue=enqueue,
    )


def rollback_run_start(
    *, user: AbstractBaseUser | AnonymousUser | None, enqueue: bool = True
) -> ApplyRun:
    """Go back to the version applied before the current one.

    The rollback is saved as a new version (a copy of the old one) before it is applied, so
    the database, gpu-assignments.yml and the override keep telling the same story.
    """
    _preflight()
    current = config_selectors.latest_applied_version()
    if current is None:
        raise ApplyRefused("Nothing has been applied yet, so there is nothing to roll back.", 400)
    older = (
        ConfigVersion.objects.filter(applied_at__isnull=False, applied_at__lt=current.applied_at)
        .order_by("-applied_at")
        .first()
    )
    if older is None:
        raise ApplyRefused(
            f"Version {current.number} is the only one ever applied; there is no earlier one.",
            400,
        )
    restored = gpu_config_restore(version=older, user=user)
    return _start_run(
        kind=RunKind.ROLLBACK, target=restored, previous=current, user=user, enqueue=enqueue
    )


# --- stale runs ---------------------------------------------------------------------------


def apply_runs_reap_stale() -> list[Any]:
    """Mark runs that no live worker is moving forward as interrupted.

    A running run whose heartbeat is older than GPUCONFIG_STALE_RUN_SECONDS lost its worker
    (killed, machine restarted); a queued run that old was never picked up (no worker).
    """
    limit = timezone.now() - timedelta(seconds=settings.GPUCONFIG_STALE_RUN_SECONDS)
    seconds = settings.GPUCONFIG_STALE_RUN_SECONDS
    reaped = []
    candidates = list(
        ApplyRun.objects.filter(
            status__in=[RunStatus.RUNNING, RunStatus.ROLLING_BACK], heartbeat_at__lt=limit
        )
    ) + list(ApplyRun.objects.filter(status=RunStatus.QUEUED, created_at__lt=limit))
    for run in candidates:
        if run.status == RunStatus.QUEUED:
            error = (
                f"No worker picked up this run within {seconds} s. Is the Celery worker "
                "running (bin/run starts one)? Nothing was changed."
            )
        else:
            error = (
                f"The worker stopped reporting while the run was {run.status} (no heartbeat "
                f"for over {seconds} s). Containers may be between versions: check the "
                "status below, then Apply again or roll back."
            )
        updated = ApplyRun.objects.filter(pk=run.pk, status=run.status).update(
            status=RunStatus.INTERRUPTED, finished_at=timezone.now(), error=error
        )
        if updated:
            reaped.append(run.pk)
            logger.warning("apply run %s marked interrupted: %s", run.pk, error)
    return reaped


# --- executing a run (in the Celery worker) -----------------------------------------------


class _RunFailed(Exception):
    """A step failed; the message says which services and why."""


@contextmanager
def _heartbeat(run_id: Any) -> Iterator[None]:
    """Refresh ``heartbeat_at`` from a side thread while the run's slow steps block."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(HEARTBEAT_SECONDS):
                ApplyRun.objects.filter(
                    pk=run_id, status__in=[RunStatus.RUNNING, RunStatus.ROLLING_BACK]
                ).update(heartbeat_at=timezone.now())
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def render_override_for(version: ConfigVersion) -> str:
    """The override file for a saved version: GPU reservations for its enabled services."""
    configuration = config_selectors.version_configuration(version)
    return render_override(
        configuration.assignments, version=version.number, generated_at=timezone.now()
    )


def _verify(
    expected: Configuration | None,
    services: Sequence[str],
    recreated_after: datetime,
    *,
    env: Mapping[str, str],
    on_step: Callable[[str, StepStatus, str], None],
    on_steps: Callable[[Sequence[str], StepStatus], None],
    check_gpu: bool = True,
) -> dict[str, str]:
    """Check every recreated container; return {service: problem} for those that failed.

    A container that runs without the GPU it was given is a failure: podman-compose versions
    and `podman compose` wrappers that drop GPU reservations do so without an error.
    """
    project = settings.GPUCONFIG_COMPOSE_PROJECT
    after = podman.inspect_services(project, services, env=env)
    on_steps(services, StepStatus.VERIFYING)

    def check(name: str) -> str | None:
        state = after.get(name)
        problem = _container_problem(
            state, expected.get(name) if expected else None, recreated_after, check_gpu=check_gpu
        )
        if problem is None and state is not None and state.health is not None:
            healthy, why = podman.wait_healthy(
                state.id,
                timeout_s=settings.GPUCONFIG_HEALTH_TIMEOUT_SECONDS,
                env=env,
                assume_running_with_check=True,
            )
            if not healthy:
                problem = f"health check failed: {why}"
        return problem

    # Health checks wait on the containers, not on us: run them side by side. The threads
    # only call podman; the database is written from this thread alone.
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(services)))) as pool:
        outcomes = dict(zip(services, pool.map(check, services), strict=True))
    problems: dict[str, str] = {}
    for name, problem in outcomes.items():
        if problem is None:
            state = after.get(name)
            on_step(name, StepStatus.HEALTHY, f"running as {state.name if state else '?'}")
        else:
            problems[name] = problem
            on_step(name, StepStatus.FAILED, problem)
    return problems


def _container_problem(
    state: podman.ContainerState | None,
    want: ResolvedAssignment | None,
    recreated_after: datetime,
    *,
    check_gpu: bool,
) -> str | None:
    if state is None:
        return "no container was created"
    if not state.running:
        return f"container is {state.status}, not running"
    if state.created is not None and state.created < recreated_after:
        return "container was not recreated (it predates this apply)"
    if not check_gpu or want is None:
        return None
    gpus = [d for d in state.cdi_devices if d.startswith("nvidia.com/gpu=")]
    if not want.placed:
        if gpus:
            return f"should have no GPU but has {', '.join(gpus)}"
        return None
    device = f"nvidia.com/gpu={want.gpu_index}"
    if device not in gpus:
        got = ", ".join(gpus) or "no GPU device"
        return (
            f"started without its GPU: expected {device}, got {got} (is the compose command "
            "dropping GPU reservations?)"
        )
    for key, value in budget_environment(want).items():
        if state.env.get(key) != value:
            return f"{key} is {state.env.get(key)!r}, expected {value!r}"
    return None


def _recreate(
    tool: podman.ComposeTool,
    services: Sequence[str],
    *,
    override: Path | None,
    env: Mapping[str, str],
) -> podman.CommandResult:
    """``up -d --force-recreate --no-deps`` of ``services`` from the base file (+ override)."""
    return podman.compose_up(
        tool,
        base=Path(settings.GPUCONFIG_COMPOSE_FILE),
        override=override,
        services=services,
        project_name=settings.GPUCONFIG_COMPOSE_PROJECT,
        cwd=compose_dir(),
        timeout_s=settings.GPUCONFIG_COMPOSE_TIMEOUT_SECONDS,
        env=env,
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _set_step(run: ApplyRun, service: str, status: StepStatus, message: str) -> None:
    ServiceStep.objects.filter(run=run, service_name=service).update(
        status=status, message=message[:2000], updated_at=timezone.now()
    )


def _record(run: ApplyRun, result: podman.CommandResult) -> None:
    command = " ".join(result.argv)
    outcome = "timed out" if result.timed_out else f"exit {result.returncode}"
    ApplyRun.objects.filter(pk=run.pk).update(
        command=(run.command + "\n" if run.command else "") + command,
        output=(
            (run.output + "\n" if run.output else "")
            + f"$ {command}\n{result.output}\n[{outcome} after {result.duration_s:.1f} s]"
        )[-20000:],
        heartbeat_at=timezone.now(),
    )
    run.refresh_from_db(fields=["command", "output"])


def apply_run_execute(run_id: Any, *, progress: Callable[[str], None] | None = None) -> str | None:
    """Carry out a queued run. Safe to call twice: only the caller that moves the run from
    queued to running does anything; the other returns None."""
    say = progress or (lambda message: None)
    now = timezone.now()
    claimed = ApplyRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        logger.info("apply run %s is not queued any more; nothing to do", run_id)
        return None
    run = ApplyRun.objects.select_related("version", "previous_version").get(pk=run_id)
    services = list(run.steps.values_list("service_name", flat=True))
    env = dict(os.environ)
    path = override_path()
    previous_text = _read(path)

    def on_step(name: str, status: StepStatus, message: str) -> None:
        _set_step(run, name, status, message)
        say(f"{name}: {status.label.lower()}{' - ' + message if message else ''}")

    def on_steps(names: Sequence[str], status: StepStatus) -> None:
        ServiceStep.objects.filter(run=run, service_name__in=names).update(
            status=status, updated_at=timezone.now()
        )
        say(f"{status.label.lower()}: {', '.join(names)}")

    with _heartbeat(run.pk):
        try:
            _forward(run, services, env, path, previous_text, on_step, on_steps, say)
        except Exception as exc:  # any failure, ours or podman's, leads to the rollback
            if not isinstance(exc, _RunFailed):
                logger.exception("apply run %s failed unexpectedly", run.pk)
            return _roll_back(
                run, services, env, path, previous_text, str(exc), on_step, on_steps, say
            )
        finally:
            close_old_connections()
    return RunStatus.SUCCEEDED


def _forward(
    run: ApplyRun,
    services: list[str],
    env: dict[str, str],
    path: Path,
    previous_text: str | None,
    on_step: Callable[[str, StepStatus, str], None],
    on_steps: Callable[[Sequence[str], StepStatus], None],
    say: Callable[[str], None],
) -> None:
    target = run.version
    tool = compose_tool(max_age_s=WORKER_PROBE_CACHE_SECONDS)
    text = render_override_for(target)
    if previous_text is not None:
        write_atomic(path.with_name(path.name + PREVIOUS_SUFFIX), previous_text)
    write_atomic(path, text)
    say(f"wrote {path} (version {target.number})")
    if services:
        # Containers created from here on are the recreated ones (no "before" inspect needed;
        # podman's clock is this host's clock).
        recreated_after = timezone.now()
        on_steps(services, StepStatus.RECREATING)
        result = _recreate(tool, services, override=path, env=env)
        _record(run, result)
        # Verify even when compose failed: podman-compose goes on after a failed service,
        # and the user needs to know which ones came up and which did not.
        problems = _verify(
            config_selectors.version_configuration(target),
            services,
            recreated_after,
            env=env,
            on_step=on_step,
            on_steps=on_steps,
        )
        if result.timed_out:
            raise _RunFailed(
                f"podman-compose did not finish within "
                f"{settings.GPUCONFIG_COMPOSE_TIMEOUT_SECONDS} s"
            )
        if problems or result.returncode != 0:
            details = "; ".join(f"{name}: {why}" for name, why in problems.items())
            exit_note = f"podman-compose exited {result.returncode}. " if result.returncode else ""
            raise _RunFailed(f"{exit_note}{details}".strip())
    finished = timezone.now()
    with transaction.atomic():
        moved = ApplyRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=RunStatus.SUCCEEDED, finished_at=finished, heartbeat_at=finished
        )
        if not moved:
            raise _RunFailed("the run was marked interrupted while it ran")
        ConfigVersion.objects.filter(pk=target.pk).update(applied_at=finished)
    say(f"version {target.number} applied; {len(services)} service(s) recreated")


def _roll_back(
    run: ApplyRun,
    services: list[str],
    env: dict[str, str],
    path: Path,
    previous_text: str | None,
    error: str,
    on_step: Callable[[str, StepStatus, str], None],
    on_steps: Callable[[Sequence[str], StepStatus], None],
    say: Callable[[str], None],
) -> str:
    ApplyRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
        status=RunStatus.ROLLING_BACK, error=error, heartbeat_at=timezone.now()
    )
    say(f"failed: {error}; rolling back")
    failed_steps = dict(
        ServiceStep.objects.filter(run=run, status=StepStatus.FAILED).values_list(
            "service_name", "message"
        )
    )
    try:
        if previous_text is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, previous_text)
        rollback_problems: dict[str, str] = {}
        if services:
            recreated_after = timezone.now()
            result = _recreate(
                compose_tool(max_age_s=WORKER_PROBE_CACHE_SECONDS),
                services,
                override=path if previous_text is not None else None,
                env=env,
            )
            _record(run, result)
            previous = run.previous_version
            rollback_problems = _verify(
                config_selectors.version_configuration(previous) if previous else None,
                services,
                recreated_after,
                env=env,
                on_step=lambda *args: None,
                on_steps=lambda *args: None,
                check_gpu=previous is not None,
            )
            if result.timed_out:
                rollback_problems.setdefault("*", "podman-compose timed out")
        if rollback_problems:
            raise _RunFailed("; ".join(f"{k}: {v}" for k, v in rollback_problems.items()))
    except Exception as exc:
        logger.error("ROLLBACK FAILED for apply run %s: %s (after: %s)", run.pk, exc, error)
        ApplyRun.objects.filter(pk=run.pk, status=RunStatus.ROLLING_BACK).update(
            status=RunStatus.ROLLBACK_FAILED,
            finished_at=timezone.now(),
            error=f"{error}\nROLLBACK FAILED: {exc}. Containers may be in between versions; "
            "check them with podman ps and apply again.",
        )
        say(f"ROLLBACK FAILED: {exc}")
        return RunStatus.ROLLBACK_FAILED
    for name in services:
        reason = failed_steps.get(name, "")
        on_step(
            name,
            StepStatus.ROLLED_BACK,
            f"restored previous container ({reason})" if reason else "restored previous container",
        )
    ApplyRun.objects.filter(pk=run.pk, status=RunStatus.ROLLING_BACK).update(
        status=RunStatus.ROLLED_BACK, finished_at=timezone.now()
    )
    say("rolled back to the previous configuration")
    return RunStatus.ROLLED_BACK
