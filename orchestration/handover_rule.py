"""Which recreated services can move without going dark (pure: no database, no podman).

A service *hands over* (make-before-break) when a second copy of it can run beside the old
container for a while: the copy is started on the target GPU, checked, and only then does the
old container stop (``orchestration.handover`` does the steps). That needs

* a container that runs now (otherwise there is nothing to keep serving),
* a health check, so "the copy is ready" means something,
* no fixed host port (two containers cannot publish the same one; the copy publishes none,
  so clients of a host port would still see a gap), not the host's network and no fixed
  address on its network,
* room on the target GPU for everything planned there, the second copy, and whatever still
  runs there until its own move: the configuration's plan numbers, not live readings.

Every other service moves as before, stop then start, and the run says why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuconfig.domain import Configuration, ResolvedAssignment, budget_mib, format_vram
from orchestration.podman import ContainerState


@dataclass(frozen=True)
class HandoverChoice:
    """How one recreated service moves, and the sentence that says so."""

    service: str
    make_before_break: bool
    reason: str


@dataclass
class HandoverState:
    """What an apply run did with its handovers, for its rollback.

    ``untouched``: services whose container this run never replaced (a copy that failed its
    checks, or a handover never reached); the rollback leaves them alone. ``handed_over``:
    services moved make-before-break, in order; the rollback moves them back the same way,
    last first. ``standby``: service -> temporary copy still serving after the compose-managed
    container failed; removed once the rollback put the previous container back.
    """

    choices: dict[str, HandoverChoice] = field(default_factory=dict)
    untouched: set[str] = field(default_factory=set)
    handed_over: list[str] = field(default_factory=list)
    standby: dict[str, str] = field(default_factory=dict)
    stop_grace_s: dict[str, float] = field(default_factory=dict)  # by service, from compose

    def restarting(self, services: Iterable[str]) -> list[str]:
        """The services that stop and then start (no handover chosen for them)."""
        return [
            s for s in services if not (s in self.choices and self.choices[s].make_before_break)
        ]

    def handing_over(self, services: Iterable[str]) -> list[str]:
        """The services that move make-before-break, in the run's order."""
        return [s for s in services if s in self.choices and self.choices[s].make_before_break]


def planned_mb(entry: ResolvedAssignment, estimates: Mapping[str, int]) -> int:
    """What one service holds on its GPU by the plan: its budget when it has one, else its
    estimate (the numbers the validator planned with)."""
    if entry.vram_budget_gb is not None:
        return budget_mib(entry.vram_budget_gb)
    return estimates.get(entry.service, 0)


# Compose durations: "10s", "1m30s", "500ms", "1.5s"; a bare number is seconds.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
DEFAULT_STOP_GRACE_S = 10.0  # compose's and podman's default


def stop_grace_s(definition: Mapping[str, Any]) -> float:
    """The service's ``stop_grace_period`` in seconds (compose's default 10 s): how long a
    copy being retired gets to end, as compose gives the container it stops."""
    value = definition.get("stop_grace_period")
    if value is None:
        return DEFAULT_STOP_GRACE_S
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return DEFAULT_STOP_GRACE_S
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def fixed_host_ports(definition: Mapping[str, Any]) -> list[str]:
    """The host ports a compose service publishes at a fixed number ("8080:80",
    "127.0.0.1:8080:80", ``{published: 8080}``); a bare container port ("80") gets a random
    host port and is not listed."""
    fixed = []
    for entry in definition.get("ports") or []:
        if isinstance(entry, Mapping):
            published = entry.get("published")
            if published not in (None, ""):
                fixed.append(str(published))
            continue
        spec = str(entry).split("/", 1)[0]
        parts = spec.rsplit(":", 2)
        if len(parts) >= 2 and parts[-2]:
            fixed.append(parts[-2])
    return fixed


def choose_handovers(
    services: Iterable[str],
    *,
    target: Configuration,
    previous: Configuration | None,
    running: Mapping[str, ContainerState],
    definitions: Mapping[str, Mapping[str, Any]],
    estimates: Mapping[str, int],
    room_mb: Mapping[int, int],
) -> dict[str, HandoverChoice]:
    """Decide, for each service a run recreates, whether it hands over or restarts.

    ``running``: the containers now; ``definitions``: each service's base compose definition;
    ``estimates``: VRAM estimates (MB) by service; ``room_mb``: what each present GPU may hold
    by the plan (capacity less the reserve).
    """
    names = list(services)
    choices = {}
    for name in names:
        want = target.get(name)
        why_not = _why_not(
            want=want, previous=previous, state=running.get(name), definition=definitions.get(name)
        )
        if why_not is None and want is not None and want.gpu_index is not None:
            need = overlap_mb(
                want.gpu_index, name, names, target=target, previous=previous, estimates=estimates
            )
            room = room_mb.get(want.gpu_index)
            if room is None:
                why_not = f"restarts, its target GPU {want.gpu_index} is not detected"
            elif need > room:
                why_not = (
                    "restarts, its target GPU has no room for a second copy (needs "
                    f"{format_vram(need)} at once, has {format_vram(room)})"
                )
        if why_not is None and want is not None:
            choices[name] = HandoverChoice(
                name,
                True,
                f"moves without a gap: a second copy starts on GPU {want.gpu_index} and "
                "takes over once it is healthy",
            )
        else:
            choices[name] = HandoverChoice(name, False, why_not or "restarts")
    return choices


def _why_not(
    *,
    want: ResolvedAssignment | None,
    previous: Configuration | None,
    state: ContainerState | None,
    definition: Mapping[str, Any] | None,
) -> str | None:
    """Why a service cannot hand over (the whole sentence after its name), or None."""
    if want is None or not want.placed:
        return "stops, it is switched off"
    if state is None or not state.running:
        return "starts, it is not running now"
    if previous is None:
        return "restarts, nothing was applied before, so there is nothing to fall back on"
    if state.health is None:
        return "restarts, it has no health check to tell when a second copy is ready"
    if definition is None:
        return "restarts, its compose definition was not found"
    return _network_problem(definition)


def _network_problem(definition: Mapping[str, Any]) -> str | None:
    """Why two containers of this service cannot share its place on the network."""
    if str(definition.get("network_mode") or "") == "host":
        return "restarts, it uses the host's network"
    ports = fixed_host_ports(definition)
    if ports:
        return f"restarts, it publishes host port {', '.join(ports)}"
    if _fixed_address(definition):
        # Two containers cannot hold one address; and the handover reconnects containers to
        # their networks, which keeps their names but not a fixed address.
        return "restarts, it has a fixed address on its network"
    return None


def _fixed_address(definition: Mapping[str, Any]) -> bool:
    if definition.get("mac_address"):
        return True
    networks = definition.get("networks")
    if not isinstance(networks, Mapping):
        return False  # a list of names, or none: addresses are assigned
    keys = ("ipv4_address", "ipv6_address", "mac_address", "x-podman.mac_address")
    return any(
        isinstance(options, Mapping) and any(options.get(key) for key in keys)
        for options in networks.values()
    )


def overlap_mb(
    gpu: int,
    service: str,
    moving: Iterable[str],
    *,
    target: Configuration,
    previous: Configuration | None,
    estimates: Mapping[str, int],
) -> int:
    """What GPU ``gpu`` holds at the worst moment of ``service``'s handover: everything the
    target plans there, the second copy of ``service``, and the services of the previous
    configuration that run there now and are moving away (they leave only when their own
    move ends)."""
    load = sum(
        planned_mb(a, estimates) for a in target.assignments if a.placed and a.gpu_index == gpu
    )
    copy = target.get(service)
    load += planned_mb(copy, estimates) if copy is not None else 0
    if previous is not None:
        for name in moving:
            before, after = previous.get(name), target.get(name)
            if before is None or not before.placed or before.gpu_index != gpu:
                continue
            if after is None or after.container_gpu != gpu:
                load += planned_mb(before, estimates)
    return load
