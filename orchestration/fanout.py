"""Applying one version across several GPU hosts (issue 20).

A run's services split by the host of their GPU (a global index: host number x 100 + the
index there; number 0 is the local host). The local host's part goes through the executor as
it always has. Each other host touched gets its part as a Celery task routed to its own
queue (``host.<name>``), all hosts at once (`send_slices`), which its agent carries out there
(`apply_slice_here`: write that host's override, recreate exactly those services, verify
each container's GPU), answering through Celery's result backend. A host with no change gets
nothing.

Order: the local host first, then the other hosts' recreates, then every stop of a service
that left a host, so a service moving from host A to host B starts on B, is verified, and
only then stops on A. If any step fails, every host touched is put back to the previous
version (`roll_back_hosts`), and the run's error names the host that failed and why.

A redelivered task (Redis re-queues an unacknowledged task after its visibility timeout)
must not recreate twice: the agent keeps each finished (run, phase) answer in its state
folder and returns it again instead of running it again; and the visibility timeout is set
above the longest a slice may take (config/settings.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import shared_task
from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.conf import settings
from django.utils import timezone

from common.files import write_atomic
from devices.models import HOST_INDEX_STRIDE, Host
from gpuconfig.config_files import render_override
from gpuconfig.domain import Configuration, ResolvedAssignment

logger = logging.getLogger(__name__)

APPLY_SLICE_TASK = "agent.apply_slice"


class HostStepFailed(Exception):
    """A host's part of a run failed; the message names the host and the cause.
    ``answered=False``: its agent never answered, so what it did is not known."""

    def __init__(self, message: str, *, answered: bool = True) -> None:
        super().__init__(message)
        self.answered = answered


def host_number(gpu_index: int) -> int:
    return gpu_index // HOST_INDEX_STRIDE


def placed_host_number(entry: ResolvedAssignment) -> int | None:
    """The number of the host a service is placed on (0: this one), None: not placed."""
    return _placed_host(entry)


def host_names(numbers: set[int]) -> dict[int, str]:
    """The hosts' names by number (one query)."""
    return dict(Host.objects.filter(number__in=numbers).values_list("number", "name"))


def hosts_phrase(numbers: set[int], names: dict[int, str] | None = None) -> str:
    """ "this host, host gpu-box-2" (``names``: by number; read when not given)."""
    names = host_names(numbers) if names is None else names
    return ", ".join("this host" if n == 0 else f"host {names.get(n, n)}" for n in sorted(numbers))


def _placed_host(entry: ResolvedAssignment | None) -> int | None:
    if entry is None or not entry.enabled or entry.gpu_index is None:
        return None
    return host_number(entry.gpu_index)


@dataclass
class HostSlice:
    """What one host other than the local one does in a run."""

    number: int
    recreate: list[str] = field(default_factory=list)  # services that run there afterwards
    stop: list[str] = field(default_factory=list)  # services that leave it

    @property
    def touched(self) -> bool:
        return bool(self.recreate or self.stop)


@dataclass(frozen=True)
class Split:
    """A run's services by host: the local ones for the executor, the others by host number."""

    local: list[str]
    local_stop: list[str]  # services that leave the local host for another
    remote: dict[int, HostSlice]

    def touched_numbers(self) -> list[int]:
        return sorted(n for n, s in self.remote.items() if s.touched)


def split_services(
    services: Sequence[str],
    target: Configuration,
    previous: Configuration | None,
    running_on: Mapping[str, set[int]] | None = None,
) -> Split:
    """Which host does what for each service of a run (pure).

    A service runs afterwards on its target GPU's host; a service switched off (or with no
    GPU) is recreated where it ran. A service whose host changes is also stopped on the host
    it leaves, and on any other host where it runs now (``running_on``: the hosts whose
    containers of it run, as observed; a service defined on several hosts may have been
    started on each before GPU Config placed it on one)."""
    local: list[str] = []
    local_stop: list[str] = []
    remote: dict[int, HostSlice] = {}
    for name in services:
        to = _placed_host(target.get(name))
        was = _placed_host(previous.get(name)) if previous is not None else None
        runs_on = to if to is not None else (was if was is not None else 0)
        if runs_on == 0:
            local.append(name)
        else:
            remote.setdefault(runs_on, HostSlice(runs_on)).recreate.append(name)
        leaves = {was} if was is not None else set()
        leaves |= set((running_on or {}).get(name, ()))
        for number in sorted(leaves - {runs_on}):
            if number == 0:
                local_stop.append(name)
            else:
                remote.setdefault(number, HostSlice(number)).stop.append(name)
    return Split(local=local, local_stop=local_stop, remote=remote)


def host_part(config: Configuration, number: int) -> Configuration:
    """The assignments placed on host ``number``, with the GPU index as that host knows it
    (what its CDI devices and its containers' environment name)."""
    base = number * HOST_INDEX_STRIDE
    out = []
    for entry in config.assignments:
        if _placed_host(entry) != number:
            continue
        assert entry.gpu_index is not None  # placed
        local_index = (
            entry.gpu_device_index if entry.gpu_device_index is not None else entry.gpu_index - base
        )
        out.append(replace(entry, gpu_index=local_index, gpu_device_index=None))
    return Configuration(tuple(out))


def local_part(config: Configuration) -> Configuration:
    """The assignments the local override holds: all but those placed on another host."""
    return Configuration(tuple(a for a in config.assignments if _placed_host(a) in (None, 0)))


# --- the central side ----------------------------------------------------------------


def slice_payload(
    *,
    run_id: str,
    phase: str,
    version: int,
    config: Configuration,
    recreate: Sequence[str],
    stop: Sequence[str],
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "phase": phase,
        "version": version,
        "assignments": config.to_json(),
        "recreate": list(recreate),
        "stop": list(stop),
    }


def slice_timeout_s() -> float:
    """How long the central worker waits for one host's answer: its compose command, then
    its health checks, and a margin for the broker. An agent that died mid-run is then
    reported as failed within this bound, never waited on forever."""
    return float(
        settings.GPUCONFIG_COMPOSE_TIMEOUT_SECONDS
        + settings.GPUCONFIG_HEALTH_TIMEOUT_SECONDS
        + settings.GPUCONFIG_HOST_ANSWER_MARGIN_SECONDS
    )


def send_slices(
    parts: Sequence[tuple[Host, Mapping[str, Any]]],
) -> list[tuple[Host, dict[str, Any] | HostStepFailed]]:
    """Send each host its part at once, then wait for every answer (one deadline for all):
    the hosts recreate side by side, so a run takes about the slowest host's time, not the
    sum. Each answer, or the failure (no answer in time, or the task's own error)."""
    # A part no agent has taken by the deadline is dropped by the agent that finally receives
    # it (Celery's expires): an agent back from the dead never carries out a stale part.
    timeout_s = slice_timeout_s()
    sent = [
        (
            host,
            agent_apply_slice_task.apply_async(
                args=[dict(payload)], queue=host.queue, expires=timeout_s
            ),
        )
        for host, payload in parts
    ]
    deadline = time.monotonic() + timeout_s
    out: list[tuple[Host, dict[str, Any] | HostStepFailed]] = []
    for host, result in sent:
        try:
            answer = result.get(
                timeout=max(0.1, deadline - time.monotonic()), disable_sync_subtasks=False
            )
        except Exception as exc:  # a timeout, or the task's own exception re-raised here
            out.append(
                (
                    host,
                    HostStepFailed(
                        f"host {host.name} did not complete its part "
                        f"({type(exc).__name__}: {exc}); is its agent running?",
                        answered=not isinstance(exc, CeleryTimeoutError),
                    ),
                )
            )
            continue
        finally:
            result.forget()
        if not isinstance(answer, dict):
            out.append((host, HostStepFailed(f"host {host.name} answered {answer!r}")))
        else:
            out.append((host, answer))
    return out


def send_slice(host: Host, payload: Mapping[str, Any]) -> dict[str, Any]:
    """One host's part, waited for; raises HostStepFailed when it failed."""
    ((_, answer),) = send_slices([(host, payload)])
    if isinstance(answer, HostStepFailed):
        raise answer
    return answer


def problems_of(host: Host, answer: Mapping[str, Any]) -> dict[str, str]:
    problems = answer.get("problems") or {}
    return {str(k): str(v) for k, v in dict(problems).items()}


# --- the agent's side ----------------------------------------------------------------


def _state_dir() -> Path:
    return Path(os.environ.get("GPUCONFIG_AGENT_STATE_DIR") or Path(settings.DATA_DIR) / "agent")


def _done_path(run_id: str, phase: str) -> Path:
    safe = "".join(c for c in f"{run_id}-{phase}" if c.isalnum() or c in "-_")
    return _state_dir() / "runs" / f"{safe}.json"


def apply_slice_here(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Carry out this host's part of a run (on the agent; no database here): write the
    override, stop the services that left, recreate those that run here, and check each
    container got its GPU. Returns {"ok", "problems", "commands"}; the same (run, phase)
    twice returns the first answer without running anything again."""
    from orchestration import podman, probe
    from orchestration.executor import container_problem

    run_id, phase = str(payload["run_id"]), str(payload["phase"])
    done = _done_path(run_id, phase)
    if done.exists():
        return dict(json.loads(done.read_text()))
    config = Configuration.from_json(payload["assignments"])
    output_dir = Path(settings.GPUCONFIG_OUTPUT_DIR)
    override = output_dir / "docker-compose.gpu-override.yml"
    write_atomic(
        override,
        render_override(
            config.assignments, version=int(payload["version"]), generated_at=timezone.now()
        ),
    )
    tool = probe.compose_tool(max_age_s=probe.WORKER_PROBE_CACHE_SECONDS)
    base = Path(settings.GPUCONFIG_COMPOSE_FILE)
    common: dict[str, Any] = {
        "base": base,
        "override": override,
        "project_name": settings.GPUCONFIG_COMPOSE_PROJECT,
        "cwd": probe.compose_dir(),
        "timeout_s": settings.GPUCONFIG_COMPOSE_TIMEOUT_SECONDS,
        "env": dict(os.environ),
    }
    commands: list[dict[str, Any]] = []
    problems: dict[str, str] = {}

    def record(result: podman.CommandResult, started: datetime) -> None:
        commands.append(
            {
                "argv": list(result.argv),
                "exit_code": None if result.timed_out else result.returncode,
                "timed_out": result.timed_out,
                "started_at": started.isoformat(),
                "duration_s": result.duration_s,
                "output": result.output[-4000:],
            }
        )

    stop = [str(s) for s in payload.get("stop", [])]
    if stop:
        started = timezone.now()
        result = podman.compose_stop(tool, services=stop, **common)
        record(result, started)
        if not result.ok:
            problems.update({name: "could not be stopped" for name in stop})
    recreate = [str(s) for s in payload.get("recreate", [])]
    if recreate:
        started = timezone.now()
        result = podman.compose_up(tool, services=recreate, **common)
        record(result, started)
        after = podman.read_containers(
            settings.GPUCONFIG_COMPOSE_PROJECT, recreate, env=common["env"]
        )
        for name in recreate:
            want = config.get(name)
            problem = container_problem(after.get(name), want, started, check_gpu=False)
            if problem is None and want is not None:
                problem = _gpu_problem_here(after[name], want)
            if problem is None and after[name].health is not None:
                healthy, why = podman.wait_healthy(
                    after[name].id,
                    timeout_s=settings.GPUCONFIG_HEALTH_TIMEOUT_SECONDS,
                    env=common["env"],
                )
                problem = None if healthy else f"health check failed: {why}"
            if problem is not None:
                problems[name] = problem
        if not result.ok and not problems:
            problems["compose"] = podman.first_error_line(result.output) or (
                f"podman-compose exited {result.returncode}"
            )
    answer = {"ok": not problems, "problems": problems, "commands": commands}
    write_atomic(done, json.dumps(answer))
    return answer


def _gpu_problem_here(state: Any, want: ResolvedAssignment) -> str | None:
    """The rule the executor checks (exactly the given GPU, and its environment), without
    the local GPU sample: this host's GPUs are the agent's own."""
    from orchestration.observed import Mismatch, expected_devices, gpu_devices, gpu_difference

    found = gpu_difference(state, want)
    if found is None:
        return None
    if found.kind in (Mismatch.NO_DEVICE, Mismatch.OTHER_GPU):
        got = ", ".join(gpu_devices(state)) or "no GPU device"
        return f"started without its GPU: expected {' or '.join(expected_devices(want))}, got {got}"
    return found.reason


@shared_task(name=APPLY_SLICE_TASK, ignore_result=False, acks_late=True)
def agent_apply_slice_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Runs on an agent, from its host's queue only (the central worker never consumes it).
    Reports the host's containers right after, before answering: when the run reads the
    answer, GPU Config already shows what runs there now."""
    answer = apply_slice_here(payload)
    from orchestration.agent.client import report_now
    from orchestration.agent.environment import AgentError, agent_environment

    try:
        report_now(agent_environment())
    except AgentError as exc:
        logger.warning("the report after run %s failed: %s", payload.get("run_id"), exc)
    return answer


def services_elsewhere(target: Configuration, previous: Configuration | None) -> set[str]:
    """The services placed on another host than the local one, in either version."""
    names = {a.service for a in target.assignments if _placed_host(a) not in (None, 0)}
    if previous is not None:
        names |= {a.service for a in previous.assignments if _placed_host(a) not in (None, 0)}
    return names
