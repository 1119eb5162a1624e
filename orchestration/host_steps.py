"""A run's steps on the other GPU hosts (issue 20), from the worker that runs it.

`orchestration.fanout` says which host does what and carries each host's part to its agent;
this module moves the run's rows forward as the hosts answer, in the executor's order: after
this host's own part, the hosts services arrive on (`forward(arriving=True)`), then those
they leave (`forward(arriving=False)`), and on failure every host touched back (`back`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from devices.models import Host
from gpuconfig.domain import Configuration
from orchestration import fanout, podman, probe
from orchestration.executor import ApplyContext, RunFailed, record_command, recreate
from orchestration.models import ApplyCommand, ApplyRun, StepStatus


def forward(context: ApplyContext, *, arriving: bool) -> None:
    """The other hosts' parts of the run (arriving: recreate; else: stop the services that
    left them, and on this host those that left it). Raises RunFailed naming the host."""
    split = context.split
    if split is None or context.whole_target is None:
        return
    if not arriving and split.local_stop:
        _stop_here(context, split.local_stop)
    parts = [
        (number, split.remote[number].recreate if arriving else split.remote[number].stop)
        for number in split.touched_numbers()
    ]
    parts = [(number, services) for number, services in parts if services]
    if parts:
        _host_parts(context, context.whole_target, parts, arriving=arriving)


def _stop_here(context: ApplyContext, services: list[str]) -> None:
    """Stop on this host the services that moved to another (after they started there)."""
    started = timezone.now()
    result = podman.compose_stop(
        probe.compose_tool(max_age_s=probe.WORKER_PROBE_CACHE_SECONDS),
        base=Path(settings.GPUCONFIG_COMPOSE_FILE),
        override=context.override,
        services=services,
        project_name=settings.GPUCONFIG_COMPOSE_PROJECT,
        cwd=probe.compose_dir(),
        timeout_s=settings.GPUCONFIG_COMPOSE_TIMEOUT_SECONDS,
        env=context.env,
    )
    record_command(context.run, result, started)
    if not result.ok:
        raise RunFailed(f"this host could not stop {', '.join(services)}")


def _host_parts(
    context: ApplyContext,
    target: Configuration,
    parts: list[tuple[int, list[str]]],
    *,
    arriving: bool,
) -> None:
    """Send each host its part at once and wait for all (fanout.send_slices); then move the
    steps forward from each answer, and raise RunFailed naming the first host that failed."""
    hosts = {h.number: h for h in Host.objects.filter(number__in=[n for n, _ in parts])}
    payloads = []
    for number, services in parts:
        if arriving:
            context.set_steps(services, StepStatus.RECREATING)
        context.say(
            f"host {hosts[number].name}: {'recreating' if arriving else 'stopping'} {services}"
        )
        payloads.append(
            (
                hosts[number],
                fanout.slice_payload(
                    run_id=str(context.run.pk),
                    phase="arrive" if arriving else "leave",
                    version=context.run.version.number,
                    config=fanout.host_part(target, number),
                    recreate=services if arriving else [],
                    stop=[] if arriving else services,
                ),
            )
        )
    failures = []
    for (host, answer), (number, services) in zip(fanout.send_slices(payloads), parts, strict=True):
        # Only a host that answered is put back on failure: one that never answered (its
        # agent died) may not have run it at all; when it returns, its report says what runs.
        if isinstance(answer, fanout.HostStepFailed) and not answer.answered:
            context.hosts_silent.append(number)
        elif number not in context.hosts_done:
            context.hosts_done.append(number)
        problem = _host_answer(context, host, services, answer, arriving=arriving)
        if problem:
            failures.append(problem)
    if failures:
        raise RunFailed("; ".join(failures))


def _host_answer(
    context: ApplyContext,
    host: Host,
    services: list[str],
    answer: dict[str, Any] | fanout.HostStepFailed,
    *,
    arriving: bool,
) -> str:
    """Move the steps of one host's part forward; the failure's sentence, or ""."""
    if isinstance(answer, fanout.HostStepFailed):
        for name in services:
            context.set_step(name, StepStatus.FAILED, str(answer))
        return str(answer)
    _record_host_commands(context.run, host.name, answer)
    problems = fanout.problems_of(host, answer)
    for name in services:
        if name in problems:
            context.set_step(name, StepStatus.FAILED, f"on host {host.name}: {problems[name]}")
        elif arriving:
            context.set_step(name, StepStatus.HEALTHY, f"running on host {host.name}")
        else:
            # Left that host for another: the step's state stays the arrival's (healthy).
            context.say(f"{name}: stopped on host {host.name}")
    if not problems:
        return ""
    return f"host {host.name} failed: " + "; ".join(
        f"{name}: {why}" for name, why in problems.items()
    )


def _record_host_commands(run: ApplyRun, host: str, answer: dict[str, Any]) -> None:
    for command in answer.get("commands") or []:
        ApplyCommand.objects.create(
            run=run,
            argv=[f"[{host}]", *[str(arg) for arg in command.get("argv", [])]],
            exit_code=command.get("exit_code"),
            timed_out=bool(command.get("timed_out")),
            started_at=timezone.now(),
            duration_s=round(float(command.get("duration_s") or 0.0), 3),
            output=str(command.get("output") or ""),
        )


def back(context: ApplyContext) -> None:
    """Put every other host this run touched back to the previous version: the services of
    its part are recreated from the previous version's part there (those that arrived with
    this run are stopped), and those that left this host start again here."""
    split = context.split
    if split is None:
        return
    errors: list[str] = []
    if split.local_stop and context.previous_text is not None:
        result = recreate(context, override=context.override, services=split.local_stop)
        if not result.ok:
            errors.append(f"this host: {', '.join(split.local_stop)} did not start again")
    before = context.whole_previous
    hosts = {h.number: h for h in Host.objects.filter(number__in=context.hosts_done)}
    payloads = []
    for number in context.hosts_done:
        part = split.remote[number]
        names = part.recreate + part.stop
        placed_before = fanout.host_part(before, number) if before is not None else None
        was_here = [n for n in names if placed_before is not None and placed_before.get(n)]
        payloads.append(
            (
                hosts[number],
                fanout.slice_payload(
                    run_id=str(context.run.pk),
                    phase="back",
                    version=context.run.previous_version.number
                    if context.run.previous_version
                    else 0,
                    config=placed_before or Configuration(()),
                    recreate=was_here,
                    stop=[n for n in names if n not in was_here],
                ),
            )
        )
    # Every host at once, as forward does.
    for host, answer in fanout.send_slices(payloads) if payloads else []:
        if isinstance(answer, fanout.HostStepFailed):
            errors.append(str(answer))
            continue
        _record_host_commands(context.run, host.name, answer)
        problems = fanout.problems_of(host, answer)
        if problems:
            errors.append(
                f"host {host.name}: " + "; ".join(f"{k}: {v}" for k, v in problems.items())
            )
    if errors:
        raise RunFailed("; ".join(errors))


def remote_services(context: ApplyContext) -> list[str]:
    split = context.split
    if split is None:
        return []
    return [n for number in context.hosts_done for n in split.remote[number].recreate]
