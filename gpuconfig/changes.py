"""What differs between two resolved configurations (pure): used by Preview, the version
history and the apply run, so that all three agree on what "changed" means."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

# A resolved configuration as stored in ConfigVersion.assignments:
# {"ai-llm": {"gpu": 0, "vram_budget": None, "enabled": True, ...}, ...}
Resolved = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class ServiceChange:
    service: str
    from_gpu: int | None
    to_gpu: int | None
    from_budget: float | None
    to_budget: float | None
    from_enabled: bool
    to_enabled: bool

    @property
    def moves(self) -> bool:
        return self.from_gpu != self.to_gpu

    def describe(self) -> str:
        """One line a user reads, e.g. "ai-enrichment: GPU 0 → GPU 1; budget 6.8 → 3.5 GB"."""
        parts: list[str] = []
        if self.from_enabled != self.to_enabled:
            parts.append("enabled" if self.to_enabled else "disabled (no GPU reservation)")
        if self.moves and self.to_enabled:
            parts.append(f"{_gpu(self.from_gpu)} → {_gpu(self.to_gpu)}")
        if self.from_budget != self.to_budget and self.to_enabled:
            parts.append(f"budget {_budget(self.from_budget)} → {_budget(self.to_budget)}")
        return f"{self.service}: " + "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.describe()}


def _gpu(index: int | None) -> str:
    return "unassigned" if index is None else f"GPU {index}"


def _budget(value: float | None) -> str:
    return "default" if value is None else f"{value:g} GB"


def _entry(resolved: Resolved, service: str) -> tuple[int | None, float | None, bool]:
    entry = resolved.get(service)
    if entry is None:
        return None, None, False
    enabled = bool(entry.get("enabled", True))
    return (entry.get("gpu") if enabled else None), entry.get("vram_budget"), enabled


def config_changes(before: Resolved | None, after: Resolved) -> list[ServiceChange]:
    """Services whose GPU, budget or enabled flag differ, in name order.

    With no ``before`` (nothing applied yet) every service counts as changed.
    """
    base: Resolved = before or {}
    changes: list[ServiceChange] = []
    for service in sorted(set(base) | set(after)):
        old, new = _entry(base, service), _entry(after, service)
        if before is None or old != new:
            changes.append(ServiceChange(service, old[0], new[0], old[1], new[1], old[2], new[2]))
    return changes
