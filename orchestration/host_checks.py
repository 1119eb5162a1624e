"""The central check of the GPU hosts (Celery beat, ``orchestration.check_hosts``): which
agents are alive, which have gone silent, and which have just come back.

Liveness is Celery's remote control: one ``ping`` broadcast to the agents' node names over
the broker they already consume from. No port of the agent's, no socket protocol of our
own and no polling loop: the broker is already the only path between GPU Config and its
agents, and Celery already answers ``ping`` in every worker (with the thread pool, even
while its tasks run). Beat runs this check twice per GPUCONFIG_HOST_OFFLINE_SECONDS, so a
dead agent reads offline within 1.5 x that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from devices.hosts import host_heartbeat, host_state, hosts_mark_silent_offline
from devices.models import Host, HostStatus
from orchestration.agent.environment import agent_node_name
from orchestration.agent.tasks import agent_report_task

logger = logging.getLogger(__name__)

# How long the broadcast waits for answers; it returns as soon as every agent has answered.
PING_TIMEOUT_S = 2.0
# A report asked of a host that is gone again is dropped rather than run much later.
REPORT_EXPIRES_S = 120


@dataclass
class HostCheck:
    answered: list[str] = field(default_factory=list)
    back: list[str] = field(default_factory=list)  # were offline, answered: asked to report
    refreshed: list[str] = field(default_factory=list)  # online, last report old: asked again
    offline: list[str] = field(default_factory=list)  # written offline by this check

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "answered": self.answered,
            "back": self.back,
            "refreshed": self.refreshed,
            "offline": self.offline,
        }


def pinged_agents(host_names: list[str], *, timeout_s: float = PING_TIMEOUT_S) -> set[str]:
    """The hosts whose agent answered Celery's ping within ``timeout_s``."""
    if not host_names:
        return set()
    from config.celery import app  # the Celery app, configured from settings

    nodes = {agent_node_name(name): name for name in host_names}
    replies = app.control.ping(destination=list(nodes), timeout=timeout_s)
    return {nodes[node] for reply in replies for node in reply if node in nodes}


def hosts_check(*, timeout_s: float = PING_TIMEOUT_S) -> HostCheck:
    """Ping every joined, non-revoked agent; a heartbeat for those that answered, offline for
    those silent past GPUCONFIG_HOST_OFFLINE_SECONDS, and a fresh report asked of each host
    that has just come back, so that GPU Config shows what it really runs now."""
    hosts = list(
        Host.objects.filter(is_local=False, joined_at__isnull=False).exclude(
            status=HostStatus.REVOKED
        )
    )
    answered = pinged_agents([host.name for host in hosts], timeout_s=timeout_s)
    check = HostCheck()
    now = timezone.now()
    report_every = timedelta(seconds=settings.GPUCONFIG_HOST_REPORT_SECONDS)
    for host in hosts:
        if host.name not in answered:
            continue
        was_offline = host_state(host).label == "offline"  # judged before this heartbeat
        host_heartbeat(host)
        check.answered.append(host.name)
        if was_offline:
            check.back.append(host.name)
            agent_report_task.apply_async(queue=host.queue, expires=REPORT_EXPIRES_S)
        elif host.reported_at is None or now - host.reported_at >= report_every:
            # What runs there changes outside GPU Config too (a plain `up -d` on that host):
            # a fresh report every GPUCONFIG_HOST_REPORT_SECONDS keeps the status view true.
            check.refreshed.append(host.name)
            agent_report_task.apply_async(queue=host.queue, expires=REPORT_EXPIRES_S)
    check.offline = hosts_mark_silent_offline()
    if check.back or check.offline:
        logger.info("GPU hosts back: %s; gone offline: %s", check.back, check.offline)
    return check
