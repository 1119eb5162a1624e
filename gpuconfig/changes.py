"""What differs between two resolved configurations (pure): used by Preview, the version
history and the apply run, so that all three agree on what "changed" means."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuconfig.domain import Configuration, ResolvedAssignment, gpu_label


@dataclass(frozen=True)
class ServiceChange:
    """One service whose GPU, budget or enabled flag differs between two configurations."""

    service: str
    before: ResolvedAssignment
    after: ResolvedAssignment
    new: bool = False  # the earlier configuration does not know the service
    # How `describe` names a GPU (`domain.gpu_labels`: "gpu-box-2 / GPU 1" for another host's);
    # a GPU not in it is "GPU 101", as it was before GPUs had hosts.
    gpu_labels: Mapping[int, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def moves(self) -> bool:
        """A service that ran on a GPU goes to another one (its container restarts there)."""
        before, after = self.before.change_key()[0], self.after.change_key()[0]
        return before is not None and after is not None and before != after

    @property
    def placed_first(self) -> bool:
        """A service that ran on no GPU (new, or switched on) gets one: nothing restarts."""
        return self.before.change_key()[0] is None and self.after.change_key()[0] is not None

    @property
    def restarts(self) -> bool:
        """A running service whose container is recreated (moved, budget changed, stopped)."""
        return self.before.container_gpu is not None

    def describe(self) -> str:
        """One line a user reads, e.g. "ai-enrichment: GPU 0 → GPU 1; budget 6.8 → 3.5 GiB"."""
        (from_gpu, from_budget, from_enabled) = self.before.change_key()
        (to_gpu, to_budget, to_enabled) = self.after.change_key()
        parts: list[str] = []
        if from_enabled != to_enabled and not (self.new and self.placed_first):
            parts.append("enabled" if to_enabled else "disabled (no GPU reservation)")
        if self.placed_first and (self.new or from_enabled == to_enabled):
            parts.append(f"placed on {self._gpu(to_gpu)} for the first time")
        elif from_gpu != to_gpu and to_enabled:
            parts.append(f"{self._gpu(from_gpu)} → {self._gpu(to_gpu)}")
        if from_budget != to_budget and to_enabled:
            parts.append(f"budget {_budget(from_budget)} → {_budget(to_budget)}")
        return f"{self.service}: " + "; ".join(parts)

    def gpu_name(self, index: int) -> str:
        """GPU ``index`` as this change's lines name it ("GPU 1", "gpu-box-2 / GPU 1")."""
        return self.gpu_labels.get(index) or gpu_label(index)

    def _gpu(self, index: int | None) -> str:
        return "unassigned" if index is None else self.gpu_name(index)

    def as_dict(self) -> dict[str, Any]:
        """The API's form (documented names: from_gpu/to_gpu, from_budget/to_budget, ...)."""
        (from_gpu, from_budget, from_enabled) = self.before.change_key()
        (to_gpu, to_budget, to_enabled) = self.after.change_key()
        return {
            "service": self.service,
            "from_gpu": from_gpu,
            "to_gpu": to_gpu,
            "from_budget": from_budget,
            "to_budget": to_budget,
            "from_enabled": from_enabled,
            "to_enabled": to_enabled,
            "moved": self.moves,
            "placed_first": self.placed_first,
            "restarts": self.restarts,
            "description": self.describe(),
        }


def _budget(value: float | None) -> str:
    return "default" if value is None else f"{value:g} GiB"


def _absent(service: str) -> ResolvedAssignment:
    # A service one side does not know reads as switched off, with no GPU and no budget.
    return ResolvedAssignment(service, None, enabled=False)


def config_changes(
    before: Configuration | None,
    after: Configuration,
    gpu_labels: Mapping[int, str] | None = None,
) -> list[ServiceChange]:
    """Services whose GPU, budget or enabled flag differ, in name order.

    With no ``before`` (nothing applied yet) every service counts as changed. ``gpu_labels``
    (`domain.gpu_labels` of the GPUs known) names other hosts' GPUs in the changes' lines;
    without it every GPU reads "GPU <index>".
    """
    labels = gpu_labels or {}
    base = before or Configuration(())
    changes: list[ServiceChange] = []
    for service in sorted(set(base.by_service) | set(after.by_service)):
        old = base.get(service) or _absent(service)
        new = after.get(service) or _absent(service)
        if before is None or old.change_key() != new.change_key():
            changes.append(
                ServiceChange(service, old, new, new=base.get(service) is None, gpu_labels=labels)
            )
    return changes
