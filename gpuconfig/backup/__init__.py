"""Backup documents of the GPU configuration: build, render, parse and match (pure).

A backup is one versioned document (YAML or JSON) holding the strategy, every service's
choice (pin, budget override, enabled), the system settings, the GPUs it was made on and,
optionally, the version history. The package holds the document (``document``), its
strict reading (``parsing``) and the matching onto this host (``matching``). Nothing here
touches the database, the clock or the filesystem: ``gpuconfig.backup_services`` reads and
saves, the commands and views call it.

Parsing is strict and complete before anything is saved: every problem is reported with
its field path (``assignments[2].gpu_index``), and a foreign document or one written by a
newer GPU Config is refused before its contents are looked at.
"""

from gpuconfig.backup.document import (
    ASSIGNMENT_KEYS,
    FORMAT,
    GPU_KEYS,
    MAX_BUDGET_GB,
    MAX_BYTES,
    MAX_GPU_INDEX,
    MAX_LISTED_ERRORS,
    SCHEMA_VERSION,
    TOP_LEVEL_KEYS,
    VERSION_KEYS,
    Backup,
    BackupAssignment,
    BackupError,
    BackupGpu,
    BackupVersion,
    OutputFormat,
    backup_document,
    backup_from_saved,
    render_backup,
)
from gpuconfig.backup.matching import (
    GpuMatch,
    ImportedChoice,
    ImportPlan,
    MatchedBy,
    import_plan,
    match_gpus,
)
from gpuconfig.backup.parsing import (
    MAX_WHOLE_NUMBER,
    backup_from_document,
    load_document,
    parse_backup,
)

__all__ = [
    "ASSIGNMENT_KEYS",
    "FORMAT",
    "GPU_KEYS",
    "MAX_BUDGET_GB",
    "MAX_BYTES",
    "MAX_GPU_INDEX",
    "MAX_LISTED_ERRORS",
    "MAX_WHOLE_NUMBER",
    "SCHEMA_VERSION",
    "TOP_LEVEL_KEYS",
    "VERSION_KEYS",
    "Backup",
    "BackupAssignment",
    "BackupError",
    "BackupGpu",
    "BackupVersion",
    "GpuMatch",
    "ImportPlan",
    "ImportedChoice",
    "MatchedBy",
    "OutputFormat",
    "backup_document",
    "backup_from_document",
    "backup_from_saved",
    "import_plan",
    "load_document",
    "match_gpus",
    "parse_backup",
    "render_backup",
]
