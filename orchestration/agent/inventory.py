"""What an agent reports: this host's GPUs (the same detection as GPU Config's own host) and
the gpuconfig.* labelled services of its compose file (the same registry reader)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from django.conf import settings

from devices.detection import DetectionError, detect
from gpuconfig.registry import LABEL_BUDGET_ENV, RegistryError, load_registry, managed_labels
from orchestration.agent.environment import AgentError, agent_version

logger = logging.getLogger(__name__)


def reported_gpus(simulated: Path | None) -> list[dict[str, Any]]:
    """The host's GPUs, by their index on this host (GPU Config adds the host's base)."""
    try:
        found = detect(simulated)
    except DetectionError as exc:
        raise AgentError(f"GPU detection failed: {exc}") from None
    gpus = []
    for gpu in found.gpus:
        if gpu.vram_total_mb is None:  # not plannable; GPU Config would refuse the report
            logger.warning("GPU %s (%s) reports no VRAM total: left out", gpu.index, gpu.uuid)
            continue
        gpus.append(
            {
                "index": gpu.index,
                "uuid": gpu.uuid,
                "name": gpu.name,
                "vram_total_mb": gpu.vram_total_mb,
                "vram_used_mb": gpu.vram_used_mb,
                "vendor": gpu.vendor.value,
            }
        )
    return gpus


def reported_services(compose_file: Path) -> dict[str, dict[str, str]]:
    """Each labelled service of the compose file and its gpuconfig.* labels. The registry
    checks the file first, so a broken label stops the agent here with its sentence."""
    try:
        registry = load_registry(compose_file)
    except RegistryError as exc:
        raise AgentError(exc.user_message) from None
    return managed_labels(registry)


# The container variables drift is judged on (orchestration.observed): GPU Config's own, the
# runtimes' device lists, the CDI stand-in's, and each service's budget variable. Nothing
# else of a container's environment (its secrets) leaves the host.
_REPORTED_ENV = re.compile(r"^(GPUCONFIG_[A-Z_]+|[A-Z_]*VISIBLE_DEVICES|STANDIN_GPU)$")


def reported_containers(services: dict[str, dict[str, str]]) -> dict[str, Any] | None:
    """Each labelled service's container as podman shows it on this host (None for a service
    with none), so that GPU Config shows what really runs here; None when podman cannot be
    read (GPU Config then keeps what it had, and says when it was reported)."""
    from orchestration import podman

    try:
        states = podman.inspect_services(
            settings.GPUCONFIG_COMPOSE_PROJECT, list(services), env=os.environ
        )
    except (podman.PodmanCommandError, OSError) as exc:
        logger.warning("cannot read this host's containers: %s", exc)
        return None
    out: dict[str, Any] = {}
    for name, labels in services.items():
        state = states.get(name)
        if state is None:
            out[name] = None
            continue
        budget_env = labels.get(LABEL_BUDGET_ENV, "")
        out[name] = {
            "id": state.id[:128],
            "name": state.name[:256],
            "status": state.status[:32],
            "running": state.running,
            "health": state.health,
            "cdi_devices": list(state.cdi_devices)[:16],
            "device_nodes": list(state.device_nodes)[:16],
            "created": state.created.isoformat() if state.created else "",
            "env": {
                key: value[:256]
                for key, value in state.env.items()
                if _REPORTED_ENV.match(key) or (budget_env and key == budget_env)
            },
        }
    return out


def report_body() -> dict[str, Any]:
    """The body of POST /api/hosts/report."""
    services = reported_services(Path(settings.GPUCONFIG_COMPOSE_FILE))
    body: dict[str, Any] = {
        "agent_version": agent_version(),
        "gpus": reported_gpus(settings.GPUCONFIG_SIMULATED_GPUS),
        "services": services,
    }
    containers = reported_containers(services)
    if containers is not None:
        body["containers"] = containers
    return body
