"""podman-compose: check that the installed one can be trusted with GPUs, recreate services,
start a temporary copy of one, and check that its images are present."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestration.podman.commands import (
    QUERY_TIMEOUT_S,
    CommandResult,
    PodmanCommandError,
    _environment,
    _last_line,
    _run,
)
from orchestration.podman.containers import HANDOVER_LABEL, _check_project_name

MIN_PODMAN_COMPOSE = (1, 4)
PROBE_TIMEOUT_S = 30.0

INSTALL_COMPOSE_HINT = "pip install 'podman-compose>=1.4'"
INSTALL_PODMAN_HINT = "apt-get install -y podman runc"
# Inside the production stack podman is the host's, reached through its API socket: installing
# anything in the container would not help (docs/development/multi-gpu.md, the podman socket).
SOCKET_PODMAN_HINT = (
    "mount the host's podman socket folder into the web and worker containers and set "
    "CONTAINER_HOST to the socket in it (see the guide's podman socket section)"
)

# "podman-compose version 1.6.0" (1.1+) and "podman-compose version: 1.0.3" (1.0.x).
_COMPOSE_VERSION = re.compile(r"podman-compose(?:r)? version:?\s+v?(\d+(?:\.\d+)+)", re.IGNORECASE)
_DOCKER_COMPOSE = re.compile(r"docker[ -]compose", re.IGNORECASE)


class ComposeUnavailable(Exception):
    """podman or podman-compose cannot be used; the message says what to install or start."""


@dataclass(frozen=True)
class ComposeTool:
    """A compose command that passed :func:`probe_compose`: its argv prefix and version."""

    argv: tuple[str, ...]
    version: str
    # The podman that podman-compose drives (found on the same PATH by the probe); None for a
    # tool that was not probed, which leaves the image check out.
    podman: str | None = None


def podman_hint(env: Mapping[str, str]) -> str:
    """What to do about a missing or unusable podman, where the app runs: in the stack (its
    image sets CONTAINER_HOST) the socket, else install it. Not /run/.containerenv: bin/run
    inside a development container does want podman installed there."""
    return SOCKET_PODMAN_HINT if env.get("CONTAINER_HOST") else INSTALL_PODMAN_HINT


def probe_compose(
    command: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None
) -> ComposeTool:
    """Check that ``command`` is a podman-compose >= 1.4 over a working podman, or raise.

    Raises :class:`ComposeUnavailable` with a message saying what to install or start.
    """
    if not command:
        raise ValueError("the compose command is empty")
    run_env = _environment(env)
    executable, podman_path = _find_executables(command, run_env)
    argv = (executable, *command[1:])
    version = _compose_version(argv, shown=" ".join(command), cwd=cwd, env=run_env)
    _check_podman_works(cwd=cwd, env=run_env)
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
    argv = (
        *_project_argv(tool, project_name, base, override),
        "up",
        "-d",
        "--force-recreate",
        "--no-deps",
        *services,
    )
    return _run(argv, cwd=cwd, env=_environment(env), timeout_s=timeout_s)


def _project_argv(
    tool: ComposeTool, project_name: str, base: Path, override: Path | None
) -> tuple[str, ...]:
    """podman-compose, the project's name and its files: what every command here starts with."""
    _check_project_name(project_name)
    files = ["-f", str(base)]
    if override is not None:
        files += ["-f", str(override)]
    return (*tool.argv, "-p", project_name, *files)


def compose_stop(
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
    """Stop exactly ``services`` (a service that moved to another host): the container stays,
    so a rollback starts it again with ``compose_up``."""
    if not services:
        raise ValueError("compose_stop needs at least one service")
    argv = (*_project_argv(tool, project_name, base, override), "stop", *services)
    return _run(argv, cwd=cwd, env=_environment(env), timeout_s=timeout_s)


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


def _find_executables(command: Sequence[str], env: Mapping[str, str]) -> tuple[str, str]:
    """The compose command's executable and the podman it drives, both on ``env``'s PATH."""
    search_path = env.get("PATH", os.defpath)
    executable = shutil.which(command[0], path=search_path)
    if executable is None:
        if Path(command[0]).name == "podman":
            raise ComposeUnavailable(f"podman not found: {podman_hint(env)}")
        raise ComposeUnavailable(
            f"{command[0]} not found: {INSTALL_COMPOSE_HINT} "
            "(distribution packages such as Debian's 1.0.3 ignore GPU reservations)"
        )
    # podman-compose drives the podman found on PATH, so check that one, not ours.
    podman_path = shutil.which("podman", path=search_path)
    if podman_path is None:
        raise ComposeUnavailable(f"podman not found on PATH: {podman_hint(env)}")
    return executable, podman_path


def _compose_version(
    argv: tuple[str, ...], *, shown: str, cwd: Path, env: Mapping[str, str]
) -> str:
    """The podman-compose version ``argv`` reports, refused unless podman-compose >= 1.4."""
    result = _run((*argv, "version"), cwd=cwd, env=env, timeout_s=PROBE_TIMEOUT_S)
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
    return version


def _check_podman_works(*, cwd: Path, env: Mapping[str, str]) -> None:
    """`podman --version` works without storage; `podman info` needs the runtime and storage
    that creating containers needs, so a broken setup is refused here and not mid-Apply."""
    info = _run(("podman", "info", "--format", "json"), cwd=cwd, env=env, timeout_s=PROBE_TIMEOUT_S)
    if not info.ok:
        raise ComposeUnavailable(
            f"podman is installed but `podman info` failed: {_last_line(info.output)}; "
            + (
                SOCKET_PODMAN_HINT
                if env.get("CONTAINER_HOST")
                else "check its storage and runtime (CONTAINERS_CONF, runc) or start podman's "
                "service"
            )
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))
