"""Run podman-compose and podman, and read back what the containers really got.

Everything here runs a subprocess from an argument list with an explicit cwd, environment and
timeout, and keeps the head and the tail of its output. Command failures are returned, not
raised, where the caller decides what they mean (``compose_up``); reads that cannot answer
raise :class:`PodmanCommandError`.

Facts about podman 4.3 and podman-compose 1.6 this module relies on, checked on a real host:

* podman-compose labels each container ``io.podman.compose.project`` and
  ``io.podman.compose.service`` (and the ``com.docker.compose.*`` twins).
* A CDI device requested with ``--device nvidia.com/gpu=1`` does not appear in
  ``HostConfig.Devices`` (that stays ``[]``); the request is visible only in
  ``Config.CreateCommand``, the podman command line that created the container.
* ``Config.Env`` is the environment of the container's process after CDI edits were applied
  (``STANDIN_GPU=1`` from a CDI spec shows there), whereas ``podman exec CONTAINER env`` does
  not show CDI-added variables: ``/proc/1/environ`` inside the container does.
* An unresolvable CDI device (``nvidia.com/gpu=7``) leaves the container created but never
  started (``State.Status == "created"``) and podman-compose exits 125, printing
  ``unresolvable CDI devices nvidia.com/gpu=7``; it still goes on with the other services.
* There is no systemd here to run health-check timers: ``podman healthcheck run`` runs a check
  on demand (exit 0 healthy, 1 unhealthy, 125 no check or not running).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

MIN_PODMAN_COMPOSE = (1, 4)
OUTPUT_HEAD_CHARS = 2000
OUTPUT_TAIL_CHARS = 4000
PROBE_TIMEOUT_S = 30.0
QUERY_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 10.0

PROJECT_LABEL = "io.podman.compose.project"
SERVICE_LABEL = "io.podman.compose.service"
# The temporary copy of a service that serves while the service moves (orchestration.handover):
# it carries the project's and the service's labels too, so everything that reads "the
# container of a service" must leave it out.
HANDOVER_LABEL = "gpuconfig.handover"

INSTALL_COMPOSE_HINT = "pip install 'podman-compose>=1.4'"
INSTALL_PODMAN_HINT = "apt-get install -y podman runc"
# Inside the production stack podman is the host's, reached through its API socket: installing
# anything in the container would not help (docs/development/multi-gpu.md, the podman socket).
SOCKET_PODMAN_HINT = (
    "mount the host's podman socket folder into the web and worker containers and set "
    "CONTAINER_HOST to the socket in it (see the guide's podman socket section)"
)


def podman_hint(env: Mapping[str, str]) -> str:
    """What to do about a missing or unusable podman, where the app runs: in the stack (its
    image sets CONTAINER_HOST) the socket, else install it. Not /run/.containerenv: bin/run
    inside a development container does want podman installed there."""
    return SOCKET_PODMAN_HINT if env.get("CONTAINER_HOST") else INSTALL_PODMAN_HINT


# podman-compose and compose project names: what podman accepts in container names and labels.
_PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
# "podman-compose version 1.6.0" (1.1+) and "podman-compose version: 1.0.3" (1.0.x).
_COMPOSE_VERSION = re.compile(r"podman-compose(?:r)? version:?\s+v?(\d+(?:\.\d+)+)", re.IGNORECASE)
_DOCKER_COMPOSE = re.compile(r"docker[ -]compose", re.IGNORECASE)
# podman's timestamps: nanosecond fractions, which datetime cannot hold, and Z or an offset.
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)")
# A fully qualified CDI device name: vendor/class=name, e.g. nvidia.com/gpu=1.
_CDI_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*=[A-Za-z0-9_.:-]+")


class ComposeUnavailable(Exception):
    """podman or podman-compose cannot be used; the message says what to install or start."""


class PodmanCommandError(RuntimeError):
    """A podman query failed, so the state of the containers is unknown."""

    def __init__(self, message: str, result: CommandResult) -> None:
        super().__init__(f"{message}: {result.output.strip() or f'exit {result.returncode}'}")
        self.result = result


@dataclass(frozen=True)
class ComposeTool:
    """A compose command that passed :func:`probe_compose`: its argv prefix and version."""

    argv: tuple[str, ...]
    version: str
    # The podman that podman-compose drives (found on the same PATH by the probe); None for a
    # tool that was not probed, which leaves the image check out.
    podman: str | None = None


@dataclass(frozen=True)
class CommandResult:
    """One finished (or killed) command: what ran, how it ended, and the tail of its output."""

    argv: tuple[str, ...]
    returncode: int
    output: str
    duration_s: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass(frozen=True)
class ContainerState:
    """What podman reports about the container of one compose service."""

    id: str
    name: str
    service: str
    running: bool
    status: str  # podman's State.Status: created, running, exited, ...
    health: str | None  # starting, healthy, unhealthy; None without a health check
    cdi_devices: tuple[str, ...]  # CDI names requested at creation, e.g. "nvidia.com/gpu=1"
    env: Mapping[str, str]  # the process environment, CDI edits included
    created: datetime | None = None  # when podman created the container (UTC)
    # The podman networks it is connected to, each with its aliases there (the names that
    # resolve to it: compose gives the service's name).
    networks: Mapping[str, tuple[str, ...]] = MappingProxyType({})
    # Device nodes passed at creation (``--device /dev/dri/renderD128``), host side: an AMD
    # GPU given without a CDI spec.
    device_nodes: tuple[str, ...] = ()


def probe_compose(
    command: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None
) -> ComposeTool:
    """Check that ``command`` is a podman-compose >= 1.4 over a working podman, or raise.

    Raises :class:`ComposeUnavailable` with a message saying what to install or start.
    """
    if not command:
        raise ValueError("the compose command is empty")
    run_env = _environment(env)
    search_path = run_env.get("PATH", os.defpath)
    executable = shutil.which(command[0], path=search_path)
    if executable is None:
        if Path(command[0]).name == "podman":
            raise ComposeUnavailable(f"podman not found: {podman_hint(run_env)}")
        raise ComposeUnavailable(
            f"{command[0]} not found: {INSTALL_COMPOSE_HINT} "
            "(distribution packages such as Debian's 1.0.3 ignore GPU reservations)"
        )
    # podman-compose drives the podman found on PATH, so check that one, not ours.
    podman_path = shutil.which("podman", path=search_path)
    if podman_path is None:
        raise ComposeUnavailable(f"podman not found on PATH: {podman_hint(run_env)}")

    argv = (executable, *command[1:])
    shown = " ".join(command)
    result = _run((*argv, "version"), cwd=cwd, env=run_env, timeout_s=PROBE_TIMEOUT_S)
    # Checked before the exit code: `podman compose` may hand over to docker-compose, which
    # accepts the same files and drops their GPU reservations without a word.
    if _DOCKER_COMPOSE.search(result.output):
        raise ComposeUnavailable(
            f"`{shown}` runs docker-compose, which silently drops GPU reservations: "
            f"{INSTALL_COMPOSE_HINT} and use podman-compose"
        )
    match = _COMPOSE_VERSION.search(result.output)
    if not result.ok or match is None:
        raise ComposeUnavailable(
            f"`{shown} version` did not report a podman-compose version "
            f"(exit {result.returncode}): {_last_line(result.output)}; {INSTALL_COMPOSE_HINT}"
        )
    version = match.group(1)
    if _version_tuple(version) < MIN_PODMAN_COMPOSE:
        raise ComposeUnavailable(
            f"podman-compose {version} is too old: GPU reservations arrived in 1.2 and "
            f"--no-deps is honoured only from 1.4, so an Apply would restart the wrong "
            f"containers or none on a GPU: {INSTALL_COMPOSE_HINT}"
        )

    # `podman --version` works without storage; `podman info` needs the runtime and storage
    # that creating containers needs, so a broken setup is refused here and not mid-Apply.
    info = _run(
        ("podman", "info", "--format", "json"), cwd=cwd, env=run_env, timeout_s=PROBE_TIMEOUT_S
    )
    if not info.ok:
        raise ComposeUnavailable(
            f"podman is installed but `podman info` failed: {_last_line(info.output)}; "
            + (
                SOCKET_PODMAN_HINT
                if run_env.get("CONTAINER_HOST")
                else "check its storage and runtime (CONTAINERS_CONF, runc) or start podman's "
                "service"
            )
        )
    return ComposeTool(argv=argv, version=version, podman=podman_path)


def compose_up(
    tool: ComposeTool,
    *,
    base: Path,
    override: Path | None,
    services: Sequence[str],
    project_name: str,
    cwd: Path,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Recreate exactly ``services`` from ``base`` (plus ``override``), leaving others alone.

    Never raises for a failing command: podman-compose carries on after a service fails to
    start and exits non-zero, so the caller must inspect the containers either way.
    """
    if not services:
        # podman-compose would take an empty list to mean every service.
        raise ValueError("compose_up needs at least one service")
    _check_project_name(project_name)
    files = ["-f", str(base)]
    if override is not None:
        files += ["-f", str(override)]
    argv = (
        *tool.argv,
        "-p",
        project_name,
        *files,
        "up",
        "-d",
        "--force-recreate",
        "--no-deps",
        *services,
    )
    return _run(argv, cwd=cwd, env=_environment(env), timeout_s=timeout_s)


def inspect_services(
    project_name: str,
    services: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> dict[str, ContainerState]:
    """Return the container of each service of a compose project, by service name.

    A service with no container is absent from the result. Where a service has several (scaled,
    or a leftover), the running one is preferred, then the newest.
    """
    run_env = _environment(env)
    listed = _project_containers(project_name, env=run_env)
    wanted = set(services) if services is not None else None
    chosen: dict[str, dict[str, Any]] = {}
    for row in listed:
        labels = row.get("Labels") or {}
        service = labels.get(SERVICE_LABEL)
        if not service or (wanted is not None and service not in wanted):
            continue
        if HANDOVER_LABEL in labels:  # a temporary copy, never the service's container
            continue
        current = chosen.get(service)
        if current is None or _preference(row) > _preference(current):
            chosen[service] = row
    if not chosen:
        return {}

    ids = [row["Id"] for row in chosen.values()]
    inspected = _query_json(
        ("podman", "container", "inspect", *ids),
        env=run_env,
        what=f"cannot inspect the containers of project {project_name}",
        # A container removed between ps and inspect makes podman exit 125 but still print
        # the others; those are what we want.
        allow_partial=True,
    )
    states = [_container_state(data) for data in inspected]
    return {state.service: state for state in sorted(states, key=lambda s: s.service)}


def inspect_container(name: str, *, env: Mapping[str, str] | None = None) -> ContainerState | None:
    """One container by name or id, or None when it does not exist."""
    data = _inspect_one(name, env=_environment(env))
    return None if data is None else _container_state(data)


def compose_run_copy(
    tool: ComposeTool,
    *,
    files: Sequence[Path],
    service: str,
    name: str,
    project_name: str,
    cwd: Path,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Start a second container of ``service`` named ``name``, detached, as compose defines it
    (image, command, environment, volumes, health check, the project's network with the
    service's name as its alias, the override's GPU) but publishing no ports, labelled
    :data:`HANDOVER_LABEL` so that it is never taken for the service's own container.
    ``files``: the base compose file, then the override."""
    _check_project_name(project_name)
    argv = (
        *tool.argv,
        "-p",
        project_name,
        *(arg for file in files for arg in ("-f", str(file))),
        # Only `podman run` gets it: compose's `run` starts the copy with that command.
        f"--podman-run-args=--label={HANDOVER_LABEL}=true",
        "run",
        "-d",
        "--no-deps",
        "-T",  # no terminal: nobody attaches to it
        "--name",
        name,
        service,
    )
    return _run(argv, cwd=cwd, env=_environment(env), timeout_s=timeout_s)


def project_container_ids(project_name: str, *, env: Mapping[str, str] | None = None) -> list[str]:
    """Every container of a compose project, leftovers included (``podman ps -a``)."""
    return [row["Id"] for row in _project_containers(project_name, env=_environment(env))]


def _project_containers(project_name: str, *, env: Mapping[str, str]) -> list[dict[str, Any]]:
    _check_project_name(project_name)
    return _query_json(
        (
            "podman",
            "ps",
            "-a",
            "--filter",
            f"label={PROJECT_LABEL}={project_name}",
            "--format",
            "json",
        ),
        env=env,
        what=f"cannot list the containers of project {project_name}",
    )


def run_command(
    argv: Sequence[str],
    *,
    timeout_s: float,
    cwd: Path = Path("/"),
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run one command from an argument list with an explicit cwd, environment and timeout.

    Never raises for a failing command (or a missing executable: exit 127); the caller reads
    ``result.ok``. For the other podman work GPU Config does (building demo images, removing
    demo containers), so that every subprocess goes through this module.
    """
    return _run(argv, cwd=cwd, env=_environment(env), timeout_s=timeout_s)


def missing_images(
    images: Sequence[str],
    *,
    podman: str = "podman",
    env: Mapping[str, str] | None = None,
    timeout_s: float = QUERY_TIMEOUT_S,
) -> list[str]:
    """The ``images`` that are not in podman's local store (``podman image exists``: exit 0
    present, 1 absent). Raises :class:`PodmanCommandError` when podman cannot answer."""
    run_env = _environment(env)
    missing = []
    for image in dict.fromkeys(images):
        result = _run(
            (podman, "image", "exists", image), cwd=Path("/"), env=run_env, timeout_s=timeout_s
        )
        if result.returncode == 1 and not result.timed_out:
            missing.append(image)
        elif not result.ok:
            raise PodmanCommandError(f"`podman image exists {image}` failed", result)
    return missing


# Lines that report a failure, most telling first: podman's "Error: ..." (the cause, e.g.
# "image not known"), Python's exceptions (the line after a traceback), then Go's log lines
# at level error, which podman also prints for noise such as missing systemd health timers.
_ERROR_LINES = (
    re.compile(r"^\s*(?:Error\b|ERRO\b)"),
    re.compile(r"^\s*\S*(?:Error|Exception):"),
    re.compile(r"level=(?:error|fatal)"),
)


def first_error_line(text: str) -> str | None:
    """The first line of a command's output that looks like an error, or None."""
    lines = text.splitlines()
    for pattern in _ERROR_LINES:
        for line in lines:
            if pattern.search(line):
                return line.strip()[:500]
    return None


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


def _check_once(container_id: str, *, env: Mapping[str, str], timeout_s: float) -> bool:
    """``podman healthcheck run``: exit 0 healthy; anything else is not."""
    result = _run(
        ("podman", "healthcheck", "run", container_id),
        cwd=Path("/"),
        env=env,
        timeout_s=max(timeout_s, 1.0),
    )
    return result.ok


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


# --- helpers -----------------------------------------------------------------------------


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    # None means "this process's environment", made explicit so every command gets a copy.
    return dict(os.environ if env is None else env)


def _check_project_name(name: str) -> None:
    if not _PROJECT_NAME.fullmatch(name):
        raise ValueError(
            f"invalid compose project name {name!r}: use lowercase letters, digits, - and _"
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _trim(text: str) -> str:
    """The head and the tail of a long output: the first error is often at the top (podman
    names the failing device or image there), the final status at the bottom."""
    if len(text) <= OUTPUT_HEAD_CHARS + OUTPUT_TAIL_CHARS:
        return text
    cut = len(text) - OUTPUT_HEAD_CHARS - OUTPUT_TAIL_CHARS
    return (
        text[:OUTPUT_HEAD_CHARS] + f"\n[... {cut} characters cut ...]\n" + text[-OUTPUT_TAIL_CHARS:]
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


@dataclass(frozen=True)
class _Completed:
    result: CommandResult
    stdout: str  # untrimmed, for JSON; empty when stderr was merged into result.output


def _execute(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
    separate_stdout: bool = False,
) -> _Completed:
    started = time.monotonic()
    try:
        # A session of its own, so that a timeout kills podman-compose and the podman
        # processes it started, not just the Python wrapper.
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if separate_stdout else subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:
        # Missing executable or cwd: report it like a failed command, with the shell's 127.
        result = CommandResult(
            tuple(argv),
            127,
            f"cannot run {argv[0]}: {exc.strerror or exc}",
            time.monotonic() - started,
            False,
        )
        return _Completed(result, "")

    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):  # it may have ended meanwhile
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            stdout, stderr = proc.communicate(timeout=DRAIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # A process that left the group (conmon daemonizes) still holds the pipe open:
            # stop reading rather than hang the caller.
            stdout, stderr = "", ""
            proc.wait()
    duration = time.monotonic() - started
    stdout = stdout or ""
    output = stdout + (stderr or "") if separate_stdout else stdout
    if timed_out:
        output += f"\n[killed after {timeout_s:g} s]"
    result = CommandResult(tuple(argv), proc.returncode, _trim(output), duration, timed_out)
    return _Completed(result, stdout if separate_stdout else "")


def _run(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout_s: float
) -> CommandResult:
    return _execute(argv, cwd=cwd, env=env, timeout_s=timeout_s).result


def _query_json(
    argv: Sequence[str], *, env: Mapping[str, str], what: str, allow_partial: bool = False
) -> list[dict[str, Any]]:
    # podman queries do not depend on the working directory; "/" keeps them from holding one.
    done = _execute(argv, cwd=Path("/"), env=env, timeout_s=QUERY_TIMEOUT_S, separate_stdout=True)
    if done.result.ok or (allow_partial and not done.result.timed_out and done.stdout.strip()):
        try:
            data = json.loads(done.stdout or "[]")
        except json.JSONDecodeError:
            data = None
        if isinstance(data, list):
            return [item for item in data if isinstance(item, dict)]
    raise PodmanCommandError(what, done.result)


def _inspect_one(container_id: str, *, env: Mapping[str, str]) -> dict[str, Any] | None:
    """The container's ``podman container inspect`` data, or None when it does not exist."""
    done = _execute(
        ("podman", "container", "inspect", container_id),
        cwd=Path("/"),
        env=env,
        timeout_s=QUERY_TIMEOUT_S,
        separate_stdout=True,
    )
    try:
        data = json.loads(done.stdout or "null")
    except json.JSONDecodeError:
        data = None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return data[0]
    # For a missing container podman 4.3 prints "[]" and "no such container" and exits 125.
    if data == [] and "no such container" in done.result.output.lower():
        return None
    raise PodmanCommandError(f"cannot inspect container {container_id}", done.result)


def _preference(row: Mapping[str, Any]) -> tuple[bool, int]:
    return row.get("State") == "running", int(row.get("Created") or 0)


def _container_state(data: Mapping[str, Any]) -> ContainerState:
    config = data.get("Config") or {}
    state = data.get("State") or {}
    labels = config.get("Labels") or {}
    health = (state.get("Health") or {}).get("Status") or None
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    return ContainerState(
        id=data.get("Id", ""),
        name=data.get("Name", ""),
        service=labels.get(SERVICE_LABEL, ""),
        running=bool(state.get("Running")),
        status=state.get("Status", "unknown"),
        health=health if _has_healthcheck(data) else None,
        cdi_devices=_requested_cdi_devices(
            config.get("CreateCommand") or [], image=config.get("Image") or ""
        ),
        env=MappingProxyType(env),
        created=_parse_created(data.get("Created")),
        networks=MappingProxyType(
            {
                name: tuple((attached or {}).get("Aliases") or ())
                for name, attached in sorted(
                    ((data.get("NetworkSettings") or {}).get("Networks") or {}).items()
                )
            }
        ),
        device_nodes=_requested_device_nodes(
            config.get("CreateCommand") or [], image=config.get("Image") or ""
        ),
    )


def _parse_created(value: Any) -> datetime | None:
    """podman's RFC 3339 time with nanoseconds ("2026-11-26T23:31:04.265261616Z"), aware."""
    if not isinstance(value, str):
        return None
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        return None
    base, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        parsed = datetime.fromisoformat(f"{base}.{(fraction or '0')[:6].ljust(6, '0')}{zone}")
    except ValueError:
        return None
    return parsed


def _requested_cdi_devices(create_command: Sequence[str], *, image: str) -> tuple[str, ...]:
    """The CDI device names in a ``podman create`` command line, in order.

    podman 4.3 keeps CDI requests out of ``HostConfig.Devices``; the command line is the only
    record. Parsing stops at the image, after which arguments belong to the container's command.
    """
    found: list[str] = []
    args = list(create_command)
    for i, arg in enumerate(args):
        if image and arg == image:
            break
        if arg == "--device" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--device="):
            value = arg.removeprefix("--device=")
        else:
            continue
        if _CDI_DEVICE.fullmatch(value):
            found.append(value)
    return tuple(found)


def _requested_device_nodes(create_command: Sequence[str], *, image: str) -> tuple[str, ...]:
    """The host paths of the device nodes in a ``podman create`` command line, in order
    (``--device /dev/kfd`` or ``--device /dev/dri/renderD128:/dev/dri/renderD128:rwm``)."""
    found: list[str] = []
    args = list(create_command)
    for i, arg in enumerate(args):
        if image and arg == image:
            break
        if arg == "--device" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--device="):
            value = arg.removeprefix("--device=")
        else:
            continue
        if value.startswith("/"):
            found.append(value.split(":", 1)[0])
    return tuple(found)


def _has_healthcheck(data: Mapping[str, Any]) -> bool:
    test = ((data.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


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
