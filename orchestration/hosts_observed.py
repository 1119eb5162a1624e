"""What runs on the other GPU hosts, as their agents last reported it (issue 20).

The status view judges a service applied to another host by that host's report, never by
this host's podman: the service's container here may be stopped precisely because it moved.
Drift is judged by the same rule as here (`orchestration.observed`), on the host's own GPU
indexes, and shown in GPU Config's global numbering. A host that is offline cannot say what
runs: its services read "unknown" with the time of its last report, not "running".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from devices.hosts import host_state
from devices.models import HOST_INDEX_STRIDE, GpuDevice, Host, HostService
from gpuconfig.domain import Configuration
from orchestration import fanout, podman
from orchestration.observed import observed_service


def placed_elsewhere(applied: Configuration | None) -> dict[str, int]:
    """The applied services placed on another host than this one: {service: host number}."""
    if applied is None:
        return {}
    return {
        a.service: a.gpu_index // HOST_INDEX_STRIDE
        for a in applied.assignments
        if a.enabled and a.gpu_index is not None and a.gpu_index >= HOST_INDEX_STRIDE
    }


def observed_elsewhere(applied: Configuration, placed: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Each service placed on another host, as that host's agent last reported it (two
    queries for any number of hosts and services)."""
    numbers = set(placed.values())
    hosts = {h.number: h for h in Host.objects.filter(number__in=numbers)}
    rows = {
        (row.host.number, row.service_name): row
        for row in HostService.objects.filter(
            host__number__in=numbers, service_name__in=list(placed)
        ).select_related("host")
    }
    uuids: dict[int, dict[int, str]] = {}
    for gpu in GpuDevice.objects.filter(host__number__in=numbers).select_related("host"):
        uuids.setdefault(gpu.host.number, {})[gpu.gpu_index - gpu.host.index_base] = gpu.uuid
    out = {}
    for name, number in placed.items():
        host = hosts.get(number)
        row = rows.get((number, name))
        base = number * HOST_INDEX_STRIDE
        part = fanout.host_part(applied, number)
        state = _state(name, row.container if row is not None else None)
        entry = observed_service(name, state, part, uuids.get(number, {}))
        for key in ("gpu", "planned_gpu"):
            if entry[key] is not None:
                entry[key] += base
        entry["host"] = host.name if host is not None else f"host {number}"
        entry["reported_at"] = row.reported_at.isoformat() if row is not None else None
        now = host_state(host) if host is not None else None
        live = now.label if now is not None else "unknown"
        entry["host_state"] = live
        if live != "online":
            since = now.since if now is not None else None
            entry.update(
                state="unknown",
                health=None,
                drifted=False,
                drift=None,
                drift_reason=(
                    f"host {entry['host']} is {live}"
                    + (f" since {since:%Y-%m-%d %H:%M:%S}" if since else "")
                    + ": what runs there is not known now"
                ),
            )
        out[name] = entry
    return out


def _state(service: str, container: dict[str, Any] | None) -> podman.ContainerState | None:
    if not container:
        return None
    created = container.get("created") or ""
    return podman.ContainerState(
        id=str(container.get("id", "")),
        name=str(container.get("name", "")),
        service=service,
        running=bool(container.get("running")),
        status=str(container.get("status", "")),
        health=container.get("health"),
        cdi_devices=tuple(container.get("cdi_devices") or ()),
        env=dict(container.get("env") or {}),
        created=datetime.fromisoformat(created) if created else None,
        device_nodes=tuple(container.get("device_nodes") or ()),
    )


def running_on_hosts(services: list[str]) -> dict[str, set[int]]:
    """The other hosts (by number) whose last report shows a running container of each
    service (one query)."""
    out: dict[str, set[int]] = {}
    rows = HostService.objects.filter(
        service_name__in=services, host__is_local=False, container__isnull=False
    ).select_related("host")
    for row in rows:
        if isinstance(row.container, dict) and row.container.get("running"):
            out.setdefault(row.service_name, set()).add(row.host.number)
    return out
