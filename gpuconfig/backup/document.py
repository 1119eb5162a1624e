"""The backup document: its format, its parts, and building and rendering it (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from io import StringIO
from typing import Any

from ruamel.yaml import YAML

from common.documents import (
    excerpt,
)
from gpuconfig.domain import Configuration, Gpu, StrategyName, format_vram

FORMAT = "gpuconfig-backup"
SCHEMA_VERSION = 1
# A configuration is a few kilobytes; with a long version history a few hundred. A file
# far larger is not a backup, and is refused before it is parsed.
MAX_BYTES = 2 * 1024 * 1024
MAX_BUDGET_GB = 2000.0  # the API's bound: no GPU holds 2 TB
MAX_GPU_INDEX = 1023  # the API's bound
MAX_LISTED_ERRORS = 50

TOP_LEVEL_KEYS = (
    "format",
    "schema_version",
    "generated_at",
    "configuration_version",
    "gpus",
    "strategy",
    "assignments",
    "system_settings",
    "versions",
)
GPU_KEYS = ("index", "uuid", "name", "vram_total_mb")
ASSIGNMENT_KEYS = (
    "service",
    "gpu_index",
    "resolved_gpu_index",
    "vram_budget_override",
    "vram_budget",
    "enabled",
)
VERSION_KEYS = (
    "number",
    "created_at",
    "created_by",
    "strategy",
    "applied_at",
    "assignments",
    "warnings",
)


class OutputFormat(StrEnum):
    YAML = "yaml"
    JSON = "json"


class BackupError(ValueError):
    """A document that cannot be imported; ``errors`` are (field path, message) pairs."""

    def __init__(self, errors: Sequence[tuple[str, str]]):
        # A file of 100,000 broken entries has 100,000 problems; the answer lists the first.
        self.errors = list(errors[:MAX_LISTED_ERRORS])
        self.total = len(errors)
        super().__init__(self.summary())

    def summary(self) -> str:
        """One line: the first problem, and how many more there are."""
        path, message = self.errors[0]
        first = f"{path}: {message}" if path else message
        more = self.total - 1
        return first + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")

    def lines(self) -> list[str]:
        lines = [f"{path}: {message}" if path else message for path, message in self.errors]
        if self.total > len(self.errors):
            lines.append(f"({self.total - len(self.errors)} more problems not listed)")
        return lines


@dataclass(frozen=True)
class BackupGpu:
    """A GPU of the host the backup was made on."""

    index: int
    uuid: str
    name: str
    vram_total_mb: int | None

    def describe(self) -> str:
        size = f", {format_vram(self.vram_total_mb)}" if self.vram_total_mb else ""
        return f"GPU {self.index} ({excerpt(self.name)}{size}, {excerpt(self.uuid) or 'no UUID'})"


@dataclass(frozen=True)
class BackupAssignment:
    """One service's choice. ``gpu_index`` is the pin (None: the strategy decides);
    ``resolved_gpu_index`` and ``vram_budget`` say where it ran when the backup was made."""

    service: str
    gpu_index: int | None = None
    resolved_gpu_index: int | None = None
    vram_budget_override: float | None = None
    vram_budget: float | None = None
    enabled: bool = True


@dataclass(frozen=True)
class BackupVersion:
    """A saved version as the history holds it (kept for the record; see docs/backup.md)."""

    number: int
    created_at: str
    created_by: str | None
    strategy: str
    applied_at: str | None
    assignments: dict[str, Any]
    warnings: list[Any]


@dataclass(frozen=True)
class Backup:
    generated_at: str
    configuration_version: int | None
    gpus: tuple[BackupGpu, ...]
    strategy: StrategyName
    assignments: tuple[BackupAssignment, ...]
    system_settings: dict[str, Any]
    versions: tuple[BackupVersion, ...] | None = None
    schema_version: int = SCHEMA_VERSION


# --- building and rendering ------------------------------------------------------------------


def backup_from_saved(
    *,
    generated_at: str,
    gpus: Sequence[Gpu],
    strategy: StrategyName,
    configuration_version: int | None,
    configuration: Configuration,
    system_settings: Mapping[str, Any],
    versions: Sequence[BackupVersion] | None = None,
) -> Backup:
    """A backup of a saved configuration."""
    assignments = []
    for entry in sorted(configuration.assignments, key=lambda a: a.service):
        placed = entry.placed
        assignments.append(
            BackupAssignment(
                service=entry.service,
                # A pinned service sits on its pin, so the resolved GPU is the pin.
                gpu_index=entry.gpu_index if entry.pinned and placed else None,
                resolved_gpu_index=entry.gpu_index if placed else None,
                vram_budget_override=entry.vram_budget_override,
                vram_budget=entry.vram_budget_gb if placed else None,
                enabled=entry.enabled,
            )
        )
    return Backup(
        generated_at=generated_at,
        configuration_version=configuration_version,
        gpus=tuple(
            BackupGpu(
                index=g.index, uuid=g.uuid, name=g.name, vram_total_mb=g.vram_total_mb or None
            )
            for g in sorted(gpus, key=lambda g: g.index)
        ),
        strategy=strategy,
        assignments=tuple(assignments),
        system_settings=dict(system_settings),
        versions=tuple(versions) if versions is not None else None,
    )


def backup_document(backup: Backup) -> dict[str, Any]:
    """The document as plain data, keys in the documented order."""
    doc: dict[str, Any] = {
        "format": FORMAT,
        "schema_version": backup.schema_version,
        "generated_at": backup.generated_at,
        "configuration_version": backup.configuration_version,
        "gpus": [
            {"index": g.index, "uuid": g.uuid, "name": g.name, "vram_total_mb": g.vram_total_mb}
            for g in backup.gpus
        ],
        "strategy": backup.strategy.value,
        "assignments": [
            {
                "service": a.service,
                "gpu_index": a.gpu_index,
                "resolved_gpu_index": a.resolved_gpu_index,
                "vram_budget_override": a.vram_budget_override,
                "vram_budget": a.vram_budget,
                "enabled": a.enabled,
            }
            for a in backup.assignments
        ],
        "system_settings": dict(sorted(backup.system_settings.items())),
    }
    if backup.versions is not None:
        doc["versions"] = [
            {
                "number": v.number,
                "created_at": v.created_at,
                "created_by": v.created_by,
                "strategy": v.strategy,
                "applied_at": v.applied_at,
                "assignments": v.assignments,
                "warnings": v.warnings,
            }
            for v in backup.versions
        ]
    return doc


def render_backup(backup: Backup, output: OutputFormat = OutputFormat.YAML) -> str:
    """The document as YAML (with a header comment) or JSON."""
    doc = backup_document(backup)
    if output == OutputFormat.JSON:
        return json.dumps(doc, indent=2) + "\n"
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]  # keep key order
    out = StringIO()
    out.write(
        "# GPU Config backup. Restore with: manage.py import_gpu_config FILE --dry-run\n"
        "# then without --dry-run, or upload it under Settings > System. See docs/backup.md.\n"
    )
    yaml.dump(doc, out)
    return out.getvalue()
