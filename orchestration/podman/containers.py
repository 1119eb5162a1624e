"""Read back what the containers of a compose project really got: ``podman ps`` and
``podman container inspect``, turned into :class:`ContainerState`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from orchestration.podman.commands import (
    PodmanCommandError,
    _environment,
    _query,
    _query_json,
)

PROJECT_LABEL = "io.podman.compose.project"
SERVICE_LABEL = "io.podman.compose.service"
# The temporary copy of a service that serves while the service moves (orchestration.handover):
# it carries the project's and the service's labels too, so everything that reads "the
# container of a service" must leave it out.
HANDOVER_LABEL = "gpuconfig.handover"

# podman-compose and compose project names: what podman accepts in container names and labels.
_PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
# podman's timestamps: nanosecond fractions, which datetime cannot hold, and Z or an offset.
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)")
# A fully qualified CDI device name: vendor/class=name, e.g. nvidia.com/gpu=1.
_CDI_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*=[A-Za-z0-9_.:-]+")


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


def inspect_services_named(
    project_name: str, names: Mapping[str, str], *, env: Mapping[str, str] | None = None
) -> dict[str, ContainerState] | None:
    """The containers of ``names`` (service -> container name) in one ``podman container
    inspect``, without the ``ps`` that finds them by label first: for a caller that knows the
    names (the ones a read just gave, or compose's ``<project>_<service>_1``).

    None when anything is not plain: a name not found, a container of another project or
    service, a handover copy, one that is not running. The caller then reads by label
    (``inspect_services``), which also chooses among several containers of one service.
    """
    if not names:
        return {}
    done = _query(("podman", "container", "inspect", *names.values()), env=_environment(env))
    if not done.result.ok:
        return None  # a name not found: podman exits 125
    try:
        data = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        return None
    found: dict[str, ContainerState] = {}
    for item in data if isinstance(data, list) else []:
        labels = ((item.get("Config") or {}).get("Labels") or {}) if isinstance(item, dict) else {}
        if labels.get(PROJECT_LABEL) != project_name or HANDOVER_LABEL in labels:
            return None
        state = _container_state(item)
        if not state.running or names.get(state.service) != state.name:
            return None
        found[state.service] = state
    return found if set(found) == set(names) else None


def read_containers(
    project_name: str,
    services: Sequence[str],
    *,
    names: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, ContainerState]:
    """The containers of ``services`` now: by name in one podman call when every name is
    known (``names``: service -> container name) and all is plain, else found by their
    compose labels (``inspect_services``)."""
    if names is not None and all(s in names for s in services):
        found = inspect_services_named(project_name, {s: names[s] for s in services}, env=env)
        if found is not None:
            return found
    return inspect_services(project_name, services, env=env)


def compose_container_names(
    project_name: str, services: Sequence[str], definitions: Mapping[str, Any]
) -> dict[str, str]:
    """The name podman-compose gives each service's first container: its
    ``container_name``, else ``<project>_<service>_1`` (``definitions``: the compose file's
    services)."""
    names = {}
    for service in services:
        definition = definitions.get(service)
        given = definition.get("container_name") if isinstance(definition, dict) else None
        names[service] = given if isinstance(given, str) else f"{project_name}_{service}_1"
    return names


def inspect_container(name: str, *, env: Mapping[str, str] | None = None) -> ContainerState | None:
    """One container by name or id, or None when it does not exist."""
    data = _inspect_one(name, env=_environment(env))
    return None if data is None else _container_state(data)


def project_container_ids(project_name: str, *, env: Mapping[str, str] | None = None) -> list[str]:
    """Every container of a compose project, leftovers included (``podman ps -a``)."""
    return [row["Id"] for row in _project_containers(project_name, env=_environment(env))]


def _check_project_name(name: str) -> None:
    if not _PROJECT_NAME.fullmatch(name):
        raise ValueError(
            f"invalid compose project name {name!r}: use lowercase letters, digits, - and _"
        )


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


def _inspect_one(container_id: str, *, env: Mapping[str, str]) -> dict[str, Any] | None:
    """The container's ``podman container inspect`` data, or None when it does not exist."""
    done = _query(("podman", "container", "inspect", container_id), env=env)
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


def _has_healthcheck(data: Mapping[str, Any]) -> bool:
    test = ((data.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


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
    create_command = config.get("CreateCommand") or []
    image = config.get("Image") or ""
    return ContainerState(
        id=data.get("Id", ""),
        name=data.get("Name", ""),
        service=labels.get(SERVICE_LABEL, ""),
        running=bool(state.get("Running")),
        status=state.get("Status", "unknown"),
        health=health if _has_healthcheck(data) else None,
        cdi_devices=_requested_cdi_devices(create_command, image=image),
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
        device_nodes=_requested_device_nodes(create_command, image=image),
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


def _requested_devices(create_command: Sequence[str], *, image: str) -> Iterator[str]:
    """The value of each ``--device`` option in a ``podman create`` command line, in order.

    Parsing stops at the image, after which arguments belong to the container's command.
    """
    args = list(create_command)
    for i, arg in enumerate(args):
        if image and arg == image:
            break
        if arg == "--device" and i + 1 < len(args):
            yield args[i + 1]
        elif arg.startswith("--device="):
            yield arg.removeprefix("--device=")


def _requested_cdi_devices(create_command: Sequence[str], *, image: str) -> tuple[str, ...]:
    """The CDI device names in a ``podman create`` command line, in order.

    podman 4.3 keeps CDI requests out of ``HostConfig.Devices``; the command line is the only
    record.
    """
    return tuple(
        value
        for value in _requested_devices(create_command, image=image)
        if _CDI_DEVICE.fullmatch(value)
    )


def _requested_device_nodes(create_command: Sequence[str], *, image: str) -> tuple[str, ...]:
    """The host paths of the device nodes in a ``podman create`` command line, in order
    (``--device /dev/kfd`` or ``--device /dev/dri/renderD128:/dev/dri/renderD128:rwm``)."""
    return tuple(
        value.split(":", 1)[0]
        for value in _requested_devices(create_command, image=image)
        if value.startswith("/")
    )
