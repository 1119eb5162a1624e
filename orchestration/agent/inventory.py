"""What an agent reports: this host's GPUs (the same detection as GPU Config's own host) and
the gpuconfig.* labelled services of its compose file (the same registry reader)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings

from devices.detection import DetectionError, detect
from gpuconfig.registry import LABEL_PREFIX, RegistryError, load_registry
from gpuconfig.registry import _labels as service_labels
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
    definitions = {str(name): value for name, value in registry.compose["services"].items()}
    services = {}
    for service in registry.services:
        labels = service_labels(compose_file, service.name, definitions[service.name])
        services[service.name] = {
            key: value for key, value in labels.items() if key.startswith(LABEL_PREFIX)
        }
    return services


def report_body() -> dict[str, Any]:
    """The body of POST /api/hosts/report."""
    return {
        "agent_version": agent_version(),
        "gpus": reported_gpus(settings.GPUCONFIG_SIMULATED_GPUS),
        "services": reported_services(Path(settings.GPUCONFIG_COMPOSE_FILE)),
    }
