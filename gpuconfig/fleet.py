"""The services and GPUs of every host, as the planner sees them (issue 20).

With no host added, both are exactly the local ones (a one-host install plans as before).
With hosts, each GPU names its host, each service lists the hosts whose compose file defines
it (the local compose file for the local host, the agents' reports for the others), and the
planner places a service only on those hosts' GPUs (`gpuconfig.domain.can_run_on`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from django.conf import settings

from devices.hosts import host_state
from devices.models import Host, HostService, HostStatus
from gpuconfig.domain import Service
from gpuconfig.registry import Registry, RegistryError, load_registry, service_from_labels

logger = logging.getLogger(__name__)

LOCAL_HOST = ""  # the local host's name in the planner's terms


def has_remote_hosts() -> bool:
    """Whether any host besides the local one is known (joined or not, not revoked)."""
    return Host.objects.filter(is_local=False).exclude(status=HostStatus.REVOKED).exists()


def system_registry() -> Registry:
    """The local compose file's services merged with those the hosts' agents reported.

    A service's definition (labels) comes from the local file when it defines the service,
    else from the lowest-numbered host that does. A reported service whose labels do not
    parse is left out and logged (the agent's report was checked for shape, not meaning).
    """
    local = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
    rows = list(
        HostService.objects.filter(host__is_local=False)
        .exclude(host__status=HostStatus.REVOKED)
        .select_related("host")
        .order_by("host__number", "service_name")
    )
    if not rows:
        return local
    services: dict[str, Service] = {s.name: s for s in local.services}
    # The local host is "" in the planner's terms (gpuconfig.domain.Gpu.host), whatever its
    # row is named: no query for it, and the same number of queries at 1 host or 50.
    hosts: dict[str, set[str]] = {s.name: {LOCAL_HOST} for s in local.services}
    for row in rows:
        if row.service_name not in services:
            try:
                services[row.service_name] = service_from_labels(
                    Path(f"host {row.host.name}"), row.service_name, dict(row.labels)
                )
            except RegistryError as exc:
                logger.warning("host %s: service left out: %s", row.host.name, exc)
                continue
        hosts.setdefault(row.service_name, set()).add(row.host.name)
    return replace(
        local,
        services=tuple(
            replace(service, hosts=frozenset(hosts[name])) for name, service in services.items()
        ),
    )


def unplannable_hosts() -> dict[str, str]:
    """Hosts whose GPUs take no new services now, by name, with their state's label
    (offline, joining, maintenance, revoked)."""
    return {
        host.name: state.label
        for host in Host.objects.all()
        if not (state := host_state(host)).plannable
    }
