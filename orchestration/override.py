"""Checks of the base compose file the GPU override sits on.

The override itself is rendered by ``gpuconfig.config_files.render_override``. podman-compose
CONCATENATES lists when it merges ``-f base -f override`` (``rec_merge_one`` in
podman_compose.py), so a service whose base definition already has devices cannot be managed:
our GPU would be added to its devices instead of replacing them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def services_with_own_devices(base: Mapping[str, Any], managed: Iterable[str]) -> list[str]:
    """Return the managed services whose base definition already has devices, sorted.

    podman-compose would append the override's GPU to those devices rather than replace them,
    so the caller must refuse to manage such a service.
    """
    services = base.get("services") or {}
    clashing = []
    for name in set(managed):
        definition = services.get(name)
        if not isinstance(definition, Mapping):
            continue
        if definition.get("devices") or _reserved_devices(definition):
            clashing.append(name)
    return sorted(clashing)


def _reserved_devices(definition: Mapping[str, Any]) -> Any:
    node: Any = definition
    for key in ("deploy", "resources", "reservations", "devices"):
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node
