"""Moves without going dark: make-before-break for one service of an apply run.

For a service that qualifies (``orchestration.handover_rule``):

1. ``podman-compose run -d --no-deps -T --name <project>_<service>_handover <service>`` with
   the new override starts a *copy*: the service as compose defines it, on the new GPU,
   on the project's network under the service's name (its network alias), but publishing no
   ports and labelled ``gpuconfig.handover`` (so nothing takes it for the service's own
   container). It is checked like any recreated container: running, the new CDI device and
   environment, healthy. If it is not, it is removed and the old container, which never
   stopped, keeps serving; the run rolls back.
2. The old container leaves the project's network (``podman network disconnect``), so the
   name stops resolving to it while it still answers what it already accepted, then
   ``podman-compose up -d --force-recreate --no-deps <service>`` replaces it with compose's
   own container on the new GPU (the same command a normal apply runs), which is checked.
   Meanwhile the copy answers for the name.
3. The copy leaves the network and is removed. The final state is what a normal apply
   leaves: one compose-managed container on the new device.

The copy is removed on every path: at once when it fails, else once compose's container is
healthy, else (compose's container failed) by the rollback, after the previous container is
back, so that the service keeps answering throughout.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from django.conf import settings
from django.utils import timezone

from gpuconfig import selectors as config_selectors
from gpuconfig.domain import Configuration
from gpuconfig.registry import RegistryError, load_registry
from orchestration import podman, probe
from orchestration.executor import (
    ApplyContext,
    RunFailed,
    container_problem,
    record_command,
    recreate,
    recreate_and_verify,
    verify,
)
from orchestration.handover_rule import (
    DEFAULT_STOP_GRACE_S,
    HandoverChoice,
    choose_handovers,
    stop_grace_s,
)
from orchestration.models import StepStatus

logger = logging.getLogger(__name__)

COPY_SUFFIX = "handover"


def copy_name(service: str) -> str:
    """The temporary copy's container name: fixed, so a copy left by a killed worker is
    found and removed by the next handover of the service."""
    return f"{settings.GPUCONFIG_COMPOSE_PROJECT}_{service}_{COPY_SUFFIX}"


def choose(context: ApplyContext) -> None:
    """Decide how each service of the run moves, and say why."""
    choices = _choices(context, target=context.target, previous=context.previous)
    context.handovers.choices = choices
    for name in context.services:
        context.say(f"{name}: {choices[name].reason}")
    # Until compose replaces it, a service that hands over keeps its old container.
    context.handovers.untouched = set(context.handovers.handing_over(context.services))


def choose_back(context: ApplyContext) -> list[str]:
    """The services handed over that can hand back to the previous configuration, last
    first (the forward order reversed)."""
    done = list(context.handovers.handed_over)
    if not done or context.previous is None:
        return []
    back = _choices(context, target=context.previous, previous=context.target, services=done)
    for name in done:
        context.say(f"{name} (rollback): {back[name].reason}")
    return [name for name in reversed(done) if back[name].make_before_break]


def _choices(
    context: ApplyContext,
    *,
    target: Configuration,
    previous: Configuration | None,
    services: list[str] | None = None,
) -> dict[str, HandoverChoice]:
    names = list(context.services if services is None else services)
    decided = handover_choices(names, target=target, previous=previous, env=context.env)
    context.handovers.stop_grace_s.update(decided.grace)
    # Kept for the check after the recreate: compose gives the new container the old one's
    # name, so its health check can start before the inspect that confirms it (verify).
    for name, state in decided.running.items():
        context.container_names.setdefault(name, state.name)
        if state.health is not None:
            context.checked.add(name)
    return decided.choices


class HandoverDecision(NamedTuple):
    """How each service would move, each one's stop grace period, and what runs now."""

    choices: dict[str, HandoverChoice]
    grace: dict[str, float]
    running: dict[str, podman.ContainerState]


def handover_choices(
    names: list[str],
    *,
    target: Configuration,
    previous: Configuration | None,
    env: dict[str, str] | None = None,
) -> HandoverDecision:
    """How each of ``names`` would move to ``target`` now (handover or restart, and why),
    and each one's stop grace period: what a run decides, and what a preview says."""
    project = settings.GPUCONFIG_COMPOSE_PROJECT
    try:
        registry = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
        definitions = registry.compose.get("services") or {}
        # By the names compose gives (one podman call), else by label.
        running = podman.read_containers(
            project,
            names,
            names=podman.compose_container_names(project, names, definitions),
            env=env,
        )
    except (RegistryError, podman.PodmanCommandError) as exc:
        # Not knowing is no reason to fail the run: move as before, and say why.
        reason = f"restarts, cannot tell whether a second copy can run: {exc}"
        return HandoverDecision({n: HandoverChoice(n, False, reason) for n in names}, {}, {})
    # The inventory's capacities, as the plan used them; whether a GPU answers now is the
    # copy's own check (a GPU that went away fails it and the old container stays).
    reserve = config_selectors.system_config().vram_reserve_mb
    room = {gpu.index: gpu.vram_total_mb - reserve for gpu in config_selectors.planning_gpus()}
    grace = {name: stop_grace_s(definitions.get(name) or {}) for name in names}
    choices = choose_handovers(
        names,
        target=target,
        previous=previous,
        running=running,
        definitions=definitions,
        estimates={s.name: s.vram_estimate_mb for s in registry.services},
        room_mb=room,
    )
    return HandoverDecision(choices, grace, running)


def move(context: ApplyContext, service: str, *, back: bool = False) -> None:
    """Hand ``service`` over to its new container (``back``: to the previous configuration's,
    in a rollback); raise RunFailed when it cannot, leaving the service answering."""
    expected = context.previous if back else context.target
    want = expected.get(service) if expected is not None else None
    if expected is None or want is None or want.gpu_index is None:
        raise RunFailed(f"{service}: nothing to hand over to")
    override = context.override if not back or context.previous_text is not None else None
    name = copy_name(service)
    old = podman.inspect_services(
        settings.GPUCONFIG_COMPOSE_PROJECT, [service], env=context.env
    ).get(service)
    if not back:
        context.set_step(
            service, StepStatus.RECREATING, f"starting a second copy on GPU {want.gpu_index}"
        )
    _start_copy(context, service, name=name, override=override, expected=expected, back=back)

    # The copy answers for the name from here on: take the old container off the network
    # first, so that the name stops leading to it before compose stops it.
    context.handovers.standby[service] = name
    context.handovers.untouched.discard(service)
    if old is not None:
        _leave_networks(context, old)
    # Compose's container joins the name as it starts, before it is ready: take it out of
    # the name at once and back in once it is healthy; meanwhile the copy answers.
    hidden: list[tuple[str, dict[str, tuple[str, ...]]]] = []

    def hide_new() -> None:
        new = podman.inspect_services(
            settings.GPUCONFIG_COMPOSE_PROJECT, [service], env=context.env
        ).get(service)
        if new is not None and new.running:
            hidden.append((new.id, _hide(context, new)))

    if back:
        recreated_after = timezone.now()
        result = recreate(context, override=override, services=[service])
        hide_new()
        problems = verify(context, expected, recreated_after, report=False, services=[service])
        if problems or not result.ok:
            why = problems.get(service) or podman.first_error_line(result.output) or "failed"
            raise RunFailed(f"{service}: {why}")
    else:
        recreate_and_verify(context, [service], after_recreate=hide_new)
    for container, aliases in hidden:
        _show(context, container, aliases)
    remove_copy(context, service)
    if not back:
        context.handovers.handed_over.append(service)


def _start_copy(
    context: ApplyContext,
    service: str,
    *,
    name: str,
    override: Path | None,
    expected: Configuration,
    back: bool,
) -> None:
    """Start the copy and check it; on any failure remove it and raise RunFailed."""
    want = expected.get(service)
    assert want is not None  # move() checked
    _remove(context, service, name)  # a copy left behind by a worker that was killed
    started_after = timezone.now()
    try:
        result = _run_copy(context, service, name=name, override=override)
        state = podman.inspect_container(name, env=context.env)
        # The copy stays on the project's network, but out of the service's name until its
        # checks pass: a copy still loading its model must not get the name's requests.
        aliases = _hide(context, state) if state is not None and state.running else {}
        problem = container_problem(state, want, started_after, check_gpu=True)
        if problem is None and not result.ok:
            problem = podman.first_error_line(result.output) or f"exit {result.returncode}"
        if problem is None and state is not None:
            healthy, why = podman.wait_healthy(
                state.id, timeout_s=settings.GPUCONFIG_HEALTH_TIMEOUT_SECONDS, env=context.env
            )
            problem = None if healthy else f"health check failed: {why}"
        if problem is not None:
            kept = "the old container kept serving"
            if not back:
                context.set_step(service, StepStatus.FAILED, f"second copy: {problem}; {kept}")
            raise RunFailed(
                f"{service}: its second copy on GPU {want.gpu_index} did not come up "
                f"({problem}); {kept}"
            )
        assert state is not None  # container_problem says so
        _show(context, state.id, aliases)
    except BaseException:
        _remove(context, service, name)
        raise
    context.say(f"{service}: second copy {name} is healthy on GPU {want.gpu_index}")


def remove_copy(context: ApplyContext, service: str) -> None:
    """Take the copy of ``service`` off the network, then remove it."""
    name = context.handovers.standby.pop(service, copy_name(service))
    state = podman.inspect_container(name, env=context.env)
    if state is not None:
        _leave_networks(context, state)
    _remove(context, service, name)


def remove_standbys(context: ApplyContext) -> None:
    """Remove every copy still standing in (the end of a rollback); never raises."""
    for service in list(context.handovers.standby):
        try:
            remove_copy(context, service)
        except Exception:  # the rollback's own outcome matters more; leave a trace
            logger.exception("apply run %s: cannot remove the copy of %s", context.run.pk, service)


def _run_copy(
    context: ApplyContext, service: str, *, name: str, override: Path | None
) -> podman.CommandResult:
    started_at = timezone.now()
    result = podman.compose_run_copy(
        probe.compose_tool(max_age_s=probe.WORKER_PROBE_CACHE_SECONDS),
        files=[Path(settings.GPUCONFIG_COMPOSE_FILE), *([override] if override else [])],
        service=service,
        name=name,
        project_name=settings.GPUCONFIG_COMPOSE_PROJECT,
        cwd=probe.compose_dir(),
        timeout_s=settings.GPUCONFIG_COMPOSE_TIMEOUT_SECONDS,
        env=context.env,
    )
    record_command(context.run, result, started_at)
    return result


def _leave_networks(context: ApplyContext, state: podman.ContainerState) -> None:
    """Disconnect a container from its networks, so its name no longer resolves to it; a
    failure is recorded and tolerated (compose stops the container next either way)."""
    for network in state.networks:
        result = _podman(context, "network", "disconnect", network, state.id)
        if not result.ok:
            logger.warning("cannot disconnect %s from %s: %s", state.name, network, result.output)


def _hide(context: ApplyContext, state: podman.ContainerState) -> dict[str, tuple[str, ...]]:
    """Reconnect a container to its networks without its aliases, so that the names it
    answers for stop leading to it; return the aliases, for :func:`_show`."""
    own = state.id[:12]  # podman adds the short id as an alias itself
    aliases = {
        network: tuple(a for a in names if a != own) for network, names in state.networks.items()
    }
    for network in aliases:
        _podman_or_fail(context, "network", "disconnect", network, state.id)
        _podman_or_fail(context, "network", "connect", network, state.id)
    return aliases


def _show(context: ApplyContext, container: str, aliases: dict[str, tuple[str, ...]]) -> None:
    """Reconnect a container with its aliases: its names lead to it again."""
    for network, names in aliases.items():
        _podman_or_fail(context, "network", "disconnect", network, container)
        flags = [arg for name in names for arg in ("--alias", name)]
        _podman_or_fail(context, "network", "connect", *flags, network, container)


def _podman_or_fail(context: ApplyContext, *args: str) -> None:
    result = _podman(context, *args)
    if not result.ok:
        raise RunFailed(f"podman {' '.join(args)} failed: {result.output.strip()[-500:]}")


def _remove(context: ApplyContext, service: str, name: str) -> None:
    """Remove a copy (absent is fine: ``--ignore``), giving it the service's stop grace
    period, as compose's own stop does (compose does not record it on the container)."""
    grace = context.handovers.stop_grace_s.get(service, DEFAULT_STOP_GRACE_S)
    result = _podman(context, "rm", "--force", "--ignore", "--time", str(math.ceil(grace)), name)
    if not result.ok:
        raise RunFailed(f"cannot remove the temporary copy {name}: {result.output.strip()}")


def _podman(context: ApplyContext, *args: str) -> podman.CommandResult:
    """One podman command, recorded on the run like compose's."""
    started_at: datetime = timezone.now()
    result = podman.run_command(
        ("podman", *args), env=context.env, timeout_s=podman.QUERY_TIMEOUT_S
    )
    record_command(context.run, result, started_at)
    return result
