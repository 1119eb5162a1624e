"""Carrying out an apply run in the worker: write the override, recreate, verify, roll back.

The steps share one :class:`ApplyContext` (the run, the configuration to apply and the one it
replaces, the services to recreate, the override file and its previous text, the command
environment and the progress callback). The run's state lives in ApplyRun/ServiceStep rows
moved forward by conditional updates (``filter(pk=..., status=old).update(...)``), so two
workers can never both own a run, and a worker killed mid-run leaves a heartbeat that goes
stale (``stale_runs.apply_runs_reap_stale`` then marks the run interrupted).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.utils import timezone

from common.files import write_atomic
from devices.selectors import gpu_identity_problem
from gpuconfig import selectors as config_selectors
from gpuconfig.config_files import AMD_CDI_KIND, render_override
from gpuconfig.domain import Configuration, ResolvedAssignment
from gpuconfig.models import ConfigVersion
from orchestration import fanout, hosts_observed, podman, probe
from orchestration.fanout import Split
from orchestration.handover_rule import HandoverState
from orchestration.models import ApplyCommand, ApplyRun, RunStatus, ServiceStep, StepStatus
from orchestration.observed import Mismatch, expected_devices, gpu_devices, gpu_difference
from orchestration.override import host_has_cdi_kind

logger = logging.getLogger(__name__)

OVERRIDE_FILE = "docker-compose.gpu-override.yml"
PREVIOUS_SUFFIX = ".previous"
HEARTBEAT_SECONDS = 2.0


class RunFailed(Exception):
    """A step failed; the message says which services and why."""


def override_path() -> Path:
    return Path(settings.GPUCONFIG_OUTPUT_DIR) / OVERRIDE_FILE


@dataclass
class ApplyContext:
    """What every step of one run needs."""

    run: ApplyRun
    target: Configuration  # what this run applies
    previous: Configuration | None  # what was applied before; None: nothing yet
    services: list[str]  # the services to recreate (those whose GPU, budget or switch changed)
    override: Path
    previous_text: str | None  # the override before this run, put back on failure
    env: dict[str, str]
    say: Callable[[str], None]
    # Which services move make-before-break, and what the run did with them (for the rollback).
    handovers: HandoverState = field(default_factory=HandoverState)
    # service -> its container's name before the run (compose gives the new container the
    # same name), and the services whose container had a health check: set when the
    # handovers are chosen, so that verify reads by name and starts health checks at once.
    container_names: dict[str, str] = field(default_factory=dict)
    checked: set[str] = field(default_factory=set)
    # Several hosts: the whole version's configurations (target/previous above then hold the
    # local host's part only), the run's services by host, and the hosts done so far.
    split: Split | None = None
    whole_target: Configuration | None = None
    whole_previous: Configuration | None = None
    hosts_done: list[int] = field(default_factory=list)
    hosts_silent: list[int] = field(default_factory=list)  # sent a part, never answered

    def set_step(self, service: str, status: StepStatus, message: str = "") -> None:
        ServiceStep.objects.filter(run=self.run, service_name=service).update(
            status=status, message=message[:2000], updated_at=timezone.now()
        )
        self.say(f"{service}: {status.label.lower()}{' - ' + message if message else ''}")

    def set_steps(self, services: Sequence[str], status: StepStatus) -> None:
        ServiceStep.objects.filter(run=self.run, service_name__in=services).update(
            status=status, updated_at=timezone.now()
        )
        self.say(f"{status.label.lower()}: {', '.join(services)}")


def apply_run_execute(run_id: Any, *, progress: Callable[[str], None] | None = None) -> str | None:
    """Carry out a queued run. Safe to call twice: only the caller that moves the run from
    queued to running does anything; the other returns None."""
    now = timezone.now()
    claimed = ApplyRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        logger.info("apply run %s is not queued any more; nothing to do", run_id)
        return None
    context = _context(run_id, progress or (lambda message: None))
    with _heartbeat(run_id):
        try:
            _forward(context)
        except Exception as exc:  # any failure, ours or podman's, leads to the rollback
            if not isinstance(exc, RunFailed):
                logger.exception("apply run %s failed unexpectedly", run_id)
            if context.previous is None:
                return fail_first(context, str(exc))
            return roll_back(context, str(exc))
        finally:
            close_old_connections()
    return RunStatus.SUCCEEDED


def _context(run_id: Any, say: Callable[[str], None]) -> ApplyContext:
    run = ApplyRun.objects.select_related("version", "previous_version").get(pk=run_id)
    previous = run.previous_version
    path = override_path()
    target = config_selectors.version_configuration(run.version)
    before = config_selectors.version_configuration(previous) if previous else None
    services = list(run.steps.values_list("service_name", flat=True))
    context = ApplyContext(
        run=run,
        target=target,
        previous=before,
        services=services,
        override=path,
        previous_text=_read(path),
        env=dict(os.environ),
        say=say,
    )
    running_on = hosts_observed.running_on_hosts(services)
    if fanout.services_elsewhere(target, before) or running_on:
        # Several hosts: the local override and the executor's steps hold the local host's
        # part; the other hosts' parts go to their agents (orchestration.fanout). A service
        # placed elsewhere whose container runs here is stopped here too.
        for name, state in _local_running(services).items():
            if state.running:
                running_on.setdefault(name, set()).add(0)
        split = fanout.split_services(services, target, before, running_on)
        context.split = split
        context.whole_target, context.whole_previous = target, before
        context.target = fanout.local_part(target)
        context.previous = fanout.local_part(before) if before is not None else None
        context.services = split.local
    return context


def _local_running(services: list[str]) -> dict[str, podman.ContainerState]:
    try:
        return podman.inspect_services(settings.GPUCONFIG_COMPOSE_PROJECT, services)
    except podman.PodmanCommandError as exc:
        logger.warning("cannot read this host's containers before a run: %s", exc)
        return {}


@contextmanager
def _heartbeat(run_id: Any) -> Iterator[None]:
    """Refresh ``heartbeat_at`` from a side thread while the run's slow steps block."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(HEARTBEAT_SECONDS):
                try:
                    ApplyRun.objects.filter(
                        pk=run_id, status__in=[RunStatus.RUNNING, RunStatus.ROLLING_BACK]
                    ).update(heartbeat_at=timezone.now())
                except DatabaseError as exc:
                    # A blip (the database's name unresolvable for a second while containers
                    # join the network, a restart) must not end the heartbeat: a silent
                    # heartbeat gets a working run reaped as interrupted a minute later.
                    logger.warning(
                        "apply run %s: heartbeat not written (%s); retrying", run_id, exc
                    )
                    connection.close()
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def _forward(context: ApplyContext) -> None:
    # This host first, then the other hosts' recreates, then every stop of a service that
    # left a host: a service that moves between hosts starts on the new one and is verified
    # before the old one stops it.
    from orchestration import host_steps  # built from this module's steps, like handover

    write_override(context)
    if context.services:
        # Imported here: the handover's steps are built from this module's.
        from orchestration import handover

        handover.choose(context)
        restarting = context.handovers.restarting(context.services)
        if restarting:
            recreate_and_verify(context, restarting)
        for service in context.handovers.handing_over(context.services):
            handover.move(context, service)
    host_steps.forward(context, arriving=True)
    host_steps.forward(context, arriving=False)
    _succeed(context)


def recreate_and_verify(
    context: ApplyContext,
    services: Sequence[str],
    *,
    after_recreate: Callable[[], None] | None = None,
) -> None:
    """Recreate ``services`` from the target's override and check them; raise RunFailed
    with the cause when compose or a container failed. ``after_recreate`` runs between the
    two (a handover keeps the new container out of the service's name until it is ready)."""
    if services:
        # Containers created from here on are the recreated ones (no "before" inspect needed;
        # podman's clock is this host's clock).
        recreated_after = timezone.now()
        context.set_steps(services, StepStatus.RECREATING)
        result = recreate(context, override=context.override, services=services)
        if after_recreate is not None:
            after_recreate()
        # Verify even when compose failed: podman-compose goes on after a failed service,
        # and the user needs to know which ones came up and which did not.
        problems = verify(context, context.target, recreated_after, services=services)
        if result.timed_out:
            raise RunFailed(
                f"podman-compose did not finish within "
                f"{settings.GPUCONFIG_COMPOSE_TIMEOUT_SECONDS} s"
            )
        if problems or result.returncode != 0:
            details = "; ".join(f"{name}: {why}" for name, why in problems.items())
            exit_note = f"podman-compose exited {result.returncode}. " if result.returncode else ""
            # The cause first: podman prints it at the top ("Error: ...: image not known"),
            # above pages of output the box cuts off.
            cause = podman.first_error_line(result.output)
            raise RunFailed(f"{cause + chr(10) if cause else ''}{exit_note}{details}".strip())


def write_override(context: ApplyContext) -> None:
    """Write the target's override atomically, keeping the one it replaces as ``.previous``."""
    version = context.run.version.number
    text = render_override(
        context.target.assignments,
        version=version,
        generated_at=timezone.now(),
        amd_cdi=host_has_cdi_kind(AMD_CDI_KIND),
    )
    if context.previous_text is not None:
        path = context.override
        write_atomic(path.with_name(path.name + PREVIOUS_SUFFIX), context.previous_text)
    write_atomic(context.override, text)
    context.say(f"wrote {context.override} (version {version})")


def recreate(
    context: ApplyContext, *, override: Path | None, services: Sequence[str] | None = None
) -> podman.CommandResult:
    """``up -d --force-recreate --no-deps`` of ``services`` (default: the run's) from the base
    file (+ ``override``); the command is recorded on the run."""
    started_at = timezone.now()
    result = podman.compose_up(
        probe.compose_tool(max_age_s=probe.WORKER_PROBE_CACHE_SECONDS),
        base=Path(settings.GPUCONFIG_COMPOSE_FILE),
        override=override,
        services=context.services if services is None else services,
        project_name=settings.GPUCONFIG_COMPOSE_PROJECT,
        cwd=probe.compose_dir(),
        timeout_s=settings.GPUCONFIG_COMPOSE_TIMEOUT_SECONDS,
        env=context.env,
    )
    record_command(context.run, result, started_at)
    return result


def verify(
    context: ApplyContext,
    expected: Configuration | None,
    recreated_after: datetime,
    *,
    report: bool = True,
    services: Sequence[str] | None = None,
) -> dict[str, str]:
    """Check every recreated container; return {service: problem} for those that failed.

    A container that runs without the GPU it was given is a failure: podman-compose versions
    and `podman compose` wrappers that drop GPU reservations do so without an error. With
    ``expected=None`` (nothing applied before) only running and health are checked.
    ``report=False`` leaves the service steps as they are (the rollback's own check).
    ``services``: those to check (default: the run's).
    """
    services = list(context.services if services is None else services)
    timeout_s = settings.GPUCONFIG_HEALTH_TIMEOUT_SECONDS
    # Health checks wait on the containers, not on us: run them side by side. The threads
    # only call podman; the database is written from this thread alone.
    with ThreadPoolExecutor(max_workers=min(8, len(services) + 1)) as pool:
        # A container that had a health check gets its first check by name at once, beside
        # the inspect rather than after it (issue 19, Apply's own cost). Only one container
        # holds a name, and compose has replaced the old one by now; the result counts only
        # for the container the inspect then finds under that name.
        early = {
            name: pool.submit(
                podman.check_health_once,
                context.container_names[name],
                timeout_s=timeout_s,
                env=context.env,
            )
            for name in services
            if name in context.checked and name in context.container_names
        }
        after = podman.read_containers(
            settings.GPUCONFIG_COMPOSE_PROJECT,
            services,
            names=context.container_names,
            env=context.env,
        )
        if report:
            context.set_steps(services, StepStatus.VERIFYING)

        def check(name: str) -> str | None:
            state = after.get(name)
            want = expected.get(name) if expected else None
            problem = container_problem(
                state, want, recreated_after, check_gpu=expected is not None
            )
            if problem is None and state is not None and state.health is not None:
                named = context.container_names.get(name)
                first = early.get(name) if state.name == named else None
                if first is not None and first.result():
                    return None
                healthy, why = podman.wait_healthy(
                    state.id,
                    timeout_s=timeout_s,
                    env=context.env,
                    # A first check that failed may have come too early: look closer now.
                    assume_running_with_check=first is None,
                )
                if not healthy:
                    problem = f"health check failed: {why}"
            return problem

        outcomes = dict(zip(services, pool.map(check, services), strict=True))
    problems = {name: problem for name, problem in outcomes.items() if problem is not None}
    if report:
        for name, problem in outcomes.items():
            if problem is None:
                state = after.get(name)
                where = state.name if state else "?"
                choice = context.handovers.choices.get(name)
                how = f"; {choice.reason}" if choice is not None else ""
                context.set_step(name, StepStatus.HEALTHY, f"running as {where}{how}")
            else:
                context.set_step(name, StepStatus.FAILED, problem)
    return problems


def container_problem(
    state: podman.ContainerState | None,
    want: ResolvedAssignment | None,
    recreated_after: datetime,
    *,
    check_gpu: bool,
) -> str | None:
    """Why a recreated container does not show what it was given, or None when it does."""
    if state is None:
        return "no container was created"
    if not state.running:
        return f"container is {state.status}, not running"
    if state.created is not None and state.created < recreated_after:
        return "container was not recreated (it predates this apply)"
    if not check_gpu or want is None:
        return None
    return _gpu_problem(state, want)


def _gpu_problem(state: podman.ContainerState, want: ResolvedAssignment) -> str | None:
    """The container has exactly the GPU it was given, that GPU is still the planned one,
    and its environment names it (and its budget): the rule drift uses too
    (``orchestration.observed``), worded for a container that was just recreated."""
    found = gpu_difference(state, want)
    if found is not None and found.kind in (Mismatch.NO_DEVICE, Mismatch.OTHER_GPU):
        got = ", ".join(gpu_devices(state)) or "no GPU device"
        return (
            f"started without its GPU: expected {' or '.join(expected_devices(want))}, got {got} "
            "(is the compose command dropping GPU reservations?)"
        )
    if found is not None and found.kind is Mismatch.UNEXPECTED_GPU:
        return found.reason
    if want.placed and want.gpu_index is not None:
        # CDI names the device by host index; the plan meant a GPU by UUID, the identity the
        # runtime helper matches on inside the container (devices.runtime.same_gpu).
        identity = gpu_identity_problem(want.gpu_index, want.gpu_uuid)
        if identity is not None:
            return identity
    return found.reason if found is not None else None


def _succeed(context: ApplyContext) -> None:
    finished = timezone.now()
    with transaction.atomic():
        moved = ApplyRun.objects.filter(pk=context.run.pk, status=RunStatus.RUNNING).update(
            status=RunStatus.SUCCEEDED, finished_at=finished, heartbeat_at=finished
        )
        if not moved:
            raise RunFailed("the run was marked interrupted while it ran")
        ConfigVersion.objects.filter(pk=context.run.version_id).update(applied_at=finished)
    context.say(
        f"version {context.run.version.number} applied; "
        f"{len(context.services)} service(s) recreated"
    )


NOTHING_TO_ROLL_BACK = (
    "Nothing was applied before, so there was nothing to roll back to: the override file was "
    "put back as it was, and the containers were left as podman-compose left them (none "
    "were started or removed; check them with podman ps). Fix the cause, then apply again."
)


def fail_first(context: ApplyContext, error: str) -> str:
    """A first apply failed: there is no applied state to go back to, so do not pretend to
    restore one. Only the override file this run wrote is put back; containers are left as
    they are, since GPU Config does not know what ran before it and starting or removing
    containers of a never-applied configuration would only add to the damage."""
    run = context.run
    try:
        if context.previous_text is None:
            context.override.unlink(missing_ok=True)
        else:
            write_atomic(context.override, context.previous_text)
    except OSError as exc:
        logger.error("apply run %s: cannot put the override back: %s", run.pk, exc)
    moved = ApplyRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
        status=RunStatus.FAILED,
        finished_at=timezone.now(),
        error=f"{error}\n{NOTHING_TO_ROLL_BACK}",
    )
    if not moved:
        return _lost(run.pk)
    context.say(f"failed: {error}; nothing was applied before, so nothing is rolled back")
    return RunStatus.FAILED


def roll_back(context: ApplyContext, error: str) -> str:
    """Put the previous override back, recreate the same services from it and check them."""
    run = context.run
    claimed = ApplyRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
        status=RunStatus.ROLLING_BACK, error=error, heartbeat_at=timezone.now()
    )
    if not claimed:
        # The run was marked interrupted meanwhile (its heartbeat looked stale): its slot may
        # already belong to a new Apply, whose override and containers this must not touch.
        status = ApplyRun.objects.filter(pk=run.pk).values_list("status", flat=True).first()
        logger.error(
            "apply run %s failed (%s) but is %s now: not rolling back", run.pk, error, status
        )
        context.say(f"failed: {error}; the run is {status} now, so nothing is rolled back")
        return str(status)
    context.say(f"failed: {error}; rolling back")
    failed_steps = dict(
        ServiceStep.objects.filter(run=run, status=StepStatus.FAILED).values_list(
            "service_name", "message"
        )
    )
    from orchestration import host_steps

    try:
        host_steps.back(context)
        _restore_previous(context)
    except Exception as exc:
        logger.error("ROLLBACK FAILED for apply run %s: %s (after: %s)", run.pk, exc, error)
        moved = ApplyRun.objects.filter(pk=run.pk, status=RunStatus.ROLLING_BACK).update(
            status=RunStatus.ROLLBACK_FAILED,
            finished_at=timezone.now(),
            error=f"{error}\nROLLBACK FAILED: {exc}. Containers may be in between versions; "
            "check them with podman ps and apply again.",
        )
        context.say(f"ROLLBACK FAILED: {exc}")
        return RunStatus.ROLLBACK_FAILED if moved else _lost(run.pk)
    for name in context.services + host_steps.remote_services(context):
        reason = failed_steps.get(name, "")
        # A handover that failed before compose replaced the old container never stopped it.
        if name in context.handovers.untouched:
            what = "kept its previous container, which never stopped"
        else:
            what = "restored previous container"
        context.set_step(name, StepStatus.ROLLED_BACK, f"{what} ({reason})" if reason else what)
    moved = ApplyRun.objects.filter(pk=run.pk, status=RunStatus.ROLLING_BACK).update(
        status=RunStatus.ROLLED_BACK, finished_at=timezone.now()
    )
    if not moved:
        return _lost(run.pk)
    context.say("rolled back to the previous configuration")
    return RunStatus.ROLLED_BACK


def _lost(run_id: Any) -> str:
    """The run was marked interrupted while it rolled back: that state stands (its error
    already says the containers may be between versions); say so in the log."""
    status = ApplyRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
    logger.error("apply run %s was marked %s while it rolled back", run_id, status)
    return str(status)


def _restore_previous(context: ApplyContext) -> None:
    """The rollback's work; raises RunFailed when the previous containers do not come back."""
    if context.previous_text is None:
        context.override.unlink(missing_ok=True)
    else:
        write_atomic(context.override, context.previous_text)
    if not context.services:
        return
    from orchestration import handover  # see _forward

    # The reverse order of the forward steps: services handed over go back the same way
    # (last first) where they can; services whose old container never stopped stay.
    back = handover.choose_back(context)
    restarting = [
        s for s in context.services if s not in context.handovers.untouched and s not in back
    ]
    problems: dict[str, str] = {}
    try:
        if restarting:
            recreated_after = timezone.now()
            result = recreate(
                context,
                override=context.override if context.previous_text is not None else None,
                services=restarting,
            )
            problems = verify(
                context, context.previous, recreated_after, report=False, services=restarting
            )
            if result.timed_out:
                problems.setdefault("*", "podman-compose timed out")
        if not problems:
            for service in back:
                handover.move(context, service, back=True)
    finally:
        # A copy still serving for a service whose new container failed goes only now, once
        # the previous container is back (or could not be brought back).
        handover.remove_standbys(context)
    if problems:
        raise RunFailed("; ".join(f"{k}: {v}" for k, v in problems.items()))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def record_command(run: ApplyRun, result: podman.CommandResult, started_at: datetime) -> None:
    """A row per command, as the status API and the page show it."""
    ApplyCommand.objects.create(
        run=run,
        argv=list(result.argv),
        exit_code=None if result.timed_out else result.returncode,
        timed_out=result.timed_out,
        started_at=started_at,
        duration_s=round(result.duration_s, 3),
        output=result.output,
    )
    ApplyRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
