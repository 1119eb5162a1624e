"""What an agent is told by its environment, checked at start with one sentence per mistake."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from devices.hosts import HOST_NAME

CREDENTIAL_FILE = "credential"


class AgentError(Exception):
    """The agent cannot go on; the message is one sentence for the operator."""


def agent_node_name(host_name: str) -> str:
    """The Celery node name of a host's agent: what remote control (ping) addresses."""
    return f"agent@{host_name}"


def agent_queue(host_name: str) -> str:
    """The host's own queue (the same as ``devices.models.Host.queue``)."""
    return f"host.{host_name}"


def agent_version() -> str:
    try:
        return metadata.version("gpu-config")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class AgentEnvironment:
    url: str  # GPU Config's base URL, without the trailing slash
    host_name: str
    state_dir: Path
    join_token: str  # "" once joined: only the first start needs one
    broker_url: str

    @property
    def credential_file(self) -> Path:
        return self.state_dir / CREDENTIAL_FILE

    @property
    def queue(self) -> str:
        return agent_queue(self.host_name)

    @property
    def node_name(self) -> str:
        return agent_node_name(self.host_name)


def agent_environment(environ: Mapping[str, str] | None = None) -> AgentEnvironment:
    """The agent's settings from the environment (os.environ by default), or AgentError."""
    env = os.environ if environ is None else environ
    url = env.get("GPUCONFIG_URL", "").strip().rstrip("/")
    if not url:
        raise AgentError(
            "GPUCONFIG_URL is not set: give the agent GPU Config's address, "
            "e.g. GPUCONFIG_URL=https://gpuconfig.example.org"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise AgentError(f"GPUCONFIG_URL={url!r} is not an http(s):// URL of GPU Config")
    host_name = env.get("GPUCONFIG_HOST_NAME", "").strip()
    if not host_name:
        raise AgentError(
            "GPUCONFIG_HOST_NAME is not set: give the name the host was added under in GPU Config"
        )
    if not HOST_NAME.match(host_name):
        raise AgentError(
            f"GPUCONFIG_HOST_NAME={host_name!r} is not a host name (1-63 lowercase letters, "
            "digits and hyphens)"
        )
    # The broker is the one GPU Config's worker uses: the filesystem default cannot reach
    # another machine.
    broker_url = settings.CELERY_BROKER_URL
    if not broker_url or broker_url.startswith("filesystem://"):
        raise AgentError(
            "CELERY_BROKER_URL is not set: give the agent GPU Config's Redis, "
            "e.g. CELERY_BROKER_URL=redis://:PASSWORD@gpuconfig.example.org:6379/0"
        )
    state_dir = Path(
        env.get("GPUCONFIG_AGENT_STATE_DIR", "").strip() or Path(settings.DATA_DIR) / "agent"
    )
    return AgentEnvironment(
        url=url,
        host_name=host_name,
        state_dir=state_dir,
        join_token=env.get("GPUCONFIG_JOIN_TOKEN", "").strip(),
        broker_url=broker_url,
    )
