"""Matching a backup's GPUs and choices onto this host's (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from common.documents import (
    excerpt,
)
from gpuconfig.backup.document import (
    Backup,
    BackupGpu,
)
from gpuconfig.domain import Gpu, StrategyName, format_vram


class MatchedBy(StrEnum):
    UUID = "uuid"
    INDEX = "index"


@dataclass(frozen=True)
class GpuMatch:
    """Where each of the file's GPUs is on this host (None: this host lacks it)."""

    host_index: dict[int, int | None]
    how: dict[int, MatchedBy | None]
    warnings: tuple[str, ...]


def match_gpus(file_gpus: Sequence[BackupGpu], host_gpus: Sequence[Gpu]) -> GpuMatch:
    """Match the file's GPUs to this host's present GPUs: by UUID first, then by index.

    UUIDs survive a card moving to another slot (its index changes); the index is the fallback
    for a replaced card, or a file made without UUIDs. A host GPU is matched at most once.
    """
    present = [g for g in host_gpus if g.present]
    by_uuid = {g.uuid: g for g in present if g.uuid}
    by_index = {g.index: g for g in present}
    mapping: dict[int, int | None] = {}
    how: dict[int, MatchedBy | None] = {}
    taken: set[int] = set()
    for f in file_gpus:
        host = by_uuid.get(f.uuid) if f.uuid else None
        if host is not None:
            mapping[f.index], how[f.index] = host.index, MatchedBy.UUID
            taken.add(host.index)
    warnings: list[str] = []
    for f in file_gpus:
        if f.index in mapping:
            host = by_index[mapping[f.index]]  # type: ignore[index]
            if host.index != f.index:
                warnings.append(
                    f"{f.describe()} from the file is GPU {host.index} on this host (same UUID); "
                    "its services follow it."
                )
            continue
        host = by_index.get(f.index)
        if host is not None and host.index not in taken:
            mapping[f.index], how[f.index] = host.index, MatchedBy.INDEX
            taken.add(host.index)
            if f.uuid and host.uuid and f.uuid != host.uuid:
                warnings.append(
                    f"{f.describe()} from the file is not on this host by UUID; matched by index "
                    f"to GPU {host.index} ({host.name}, {format_vram(host.vram_total_mb)}, "
                    f"{host.uuid})."
                )
            continue
        mapping[f.index], how[f.index] = None, None
        warnings.append(f"{f.describe()} from the file is not on this host.")
    return GpuMatch(host_index=mapping, how=how, warnings=tuple(warnings))


@dataclass(frozen=True)
class ImportedChoice:
    """One service's choice translated to this host (an AssignmentChange in waiting)."""

    service: str
    position: int  # where it is in the file's assignments, for error paths
    gpu_index: int | None
    vram_budget_override: float | None
    enabled: bool


@dataclass(frozen=True)
class ImportPlan:
    choices: tuple[ImportedChoice, ...]
    warnings: tuple[str, ...] = field(default=())


def import_plan(
    backup: Backup, *, host_gpus: Sequence[Gpu], compose_services: Sequence[str]
) -> ImportPlan:
    """The file's choices as this host's: GPUs matched, unknown services set aside, warned."""
    match = match_gpus(backup.gpus, host_gpus)
    warnings = list(match.warnings)
    known = set(compose_services)
    listed = {a.service for a in backup.assignments}
    file_gpus = {g.index: g for g in backup.gpus}
    present = sorted((g for g in host_gpus if g.present), key=lambda g: -g.vram_total_mb)
    choices: list[ImportedChoice] = []
    for position, a in enumerate(backup.assignments):
        if a.service not in known:
            warnings.append(
                f"{excerpt(a.service)} is in the file but not in this compose file; it is left out."
            )
            continue
        pin = a.gpu_index
        if pin is None and backup.strategy == StrategyName.MANUAL and a.enabled:
            # Under Manual every enabled service sits where it was put: restore it there.
            pin = a.resolved_gpu_index
        target = match.host_index.get(pin) if pin is not None else None
        if pin is not None and target is None:
            lost = file_gpus[pin].describe()
            if backup.strategy == StrategyName.MANUAL and present:
                # Manual has no strategy to fall back on; the largest GPU is the likeliest fit,
                # and the warning tells the operator to check it before applying.
                target = present[0].index
                warnings.append(
                    f"{excerpt(a.service)} was on {lost}, which this host lacks; placed on GPU "
                    f"{target} ({present[0].name}). Check it before applying."
                )
            else:
                warnings.append(
                    f"{excerpt(a.service)} was pinned to {lost}, which this host lacks; "
                    f"the {backup.strategy.value} strategy places it."
                )
        choices.append(
            ImportedChoice(
                service=a.service,
                position=position,
                gpu_index=target,
                vram_budget_override=a.vram_budget_override,
                enabled=a.enabled,
            )
        )
    for name in compose_services:
        if name not in listed:
            warnings.append(
                f"{name} is in this compose file but not in the backup; it keeps its current "
                "choice."
            )
    return ImportPlan(choices=tuple(choices), warnings=tuple(warnings))
