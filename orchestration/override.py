"""Checks of the base compose file the GPU override sits on.

The override itself is rendered by ``gpuconfig.config_files.render_override``. podman-compose
CONCATENATES lists when it merges ``-f base -f override`` (``rec_merge_one`` in
podman_compose.py), so a service whose base definition already has devices cannot be managed:
our GPU would be added to its devices instead of replacing them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

_CDI_KIND = re.compile(r"""["']?\bkind["']?\s*:\s*["']?([^"'\s,}]+)""")
# Where podman reads CDI specs (4.3 has no option for another folder).
CDI_DIRS: tuple[Path, ...] = (Path("/etc/cdi"), Path("/var/run/cdi"))


def host_has_cdi_kind(kind: str, dirs: Sequence[Path] = CDI_DIRS) -> bool:
    """Whether a CDI spec of ``kind`` (``amd.com/gpu``: ``amd-ctk cdi generate``) is
    installed, so a container can be given a GPU by its CDI name."""
    for directory in dirs:
        try:
            specs = [p for p in directory.iterdir() if p.suffix in (".yaml", ".yml", ".json")]
        except OSError:
            continue
        for spec in specs:
            try:
                text = spec.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            # "kind: amd.com/gpu" (YAML) or "kind": "amd.com/gpu" (JSON, amd-ctk's default).
            if any(match == kind for match in _CDI_KIND.findall(text)):
                return True
    return False


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
