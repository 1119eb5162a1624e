"""Export and import of the GPU configuration (reads and writes around ``gpuconfig.backup``).

The import saves through ``gpu_config_save``, the service the API and the Settings page use,
so rows, the version history and ``gpu-assignments.yml`` agree; the system settings are
stored in the same transaction, so a refused import leaves everything as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from common.files import put_back, read_or_none
from gpuconfig import selectors
from gpuconfig.backup import (
    Backup,
    BackupError,
    BackupVersion,
    ImportPlan,
    backup_from_saved,
    import_plan,
)
from gpuconfig.changes import config_changes
from gpuconfig.domain import Configuration, StrategyName
from gpuconfig.models import SystemSetting
from gpuconfig.registry import load_registry
from gpuconfig.services import (
    ASSIGNMENTS_FILE,
    AssignmentChange,
    ConfigInputError,
    configuration_write_turn,
    gpu_config_draft,
    gpu_config_save,
    system_settings_update,
    validate_changes,
)
from gpuconfig.system_settings import SPECS, STRATEGY_KEY, SettingError

logger = logging.getLogger(__name__)


# A restore plans the backup's strategy and pins from scratch (issue 19's least-disruption
# planning would keep whatever ran since the export in place): the same backup gives the same
# configuration on the same host, whatever was saved in between.
_RESTORE_FROM_SCRATCH = True


def _iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _effective_settings() -> dict[str, Any]:
    """Every system setting as stored, or its default (a bad stored value is not exported)."""
    rows = dict(SystemSetting.objects.values_list("key", "value"))
    out: dict[str, Any] = {}
    for key, spec in SPECS.items():
        try:
            out[key] = spec.check(rows[key]) if key in rows else spec.default
        except SettingError:
            out[key] = spec.default
    return out


def gpu_config_export(*, include_versions: bool = False) -> Backup:
    """The saved configuration, the system settings and this host's GPUs as a backup."""
    latest = selectors.latest_version()
    versions = None
    if include_versions:
        versions = [
            BackupVersion(
                number=v.number,
                created_at=_iso(v.created_at) or "",
                created_by=v.created_by.get_username() if v.created_by else None,
                strategy=v.strategy,
                applied_at=_iso(v.applied_at),
                # Through the one configuration type: one shape whatever the version's age.
                assignments=selectors.version_configuration(v).to_json(),
                warnings=v.warnings,
            )
            for v in selectors.version_list().order_by("number")
        ]
    return backup_from_saved(
        generated_at=_iso(timezone.now()) or "",
        gpus=selectors.planning_gpus(),
        strategy=(
            StrategyName(latest.strategy) if latest else selectors.system_config().default_strategy
        ),
        configuration_version=latest.number if latest else None,
        configuration=(selectors.version_configuration(latest) if latest else Configuration(())),
        system_settings=_effective_settings(),
        versions=versions,
    )


@dataclass(frozen=True)
class ImportResult:
    dry_run: bool
    base_version: int  # the version the changes are counted from (0: nothing saved yet)
    new_version: int | None  # the saved version; None on a dry run
    changes: tuple[str, ...]  # one line per change a user reads
    warnings: tuple[str, ...]  # about the file on this host: GPUs, services, settings
    config_warnings: tuple[str, ...]  # the saved configuration's own (as on the GPU tab)


def gpu_config_import(
    *,
    backup: Backup,
    user: AbstractBaseUser | AnonymousUser | None,
    dry_run: bool = False,
    expected_version: int | None = None,
) -> ImportResult:
    """Save a backup as a new version (or, with ``dry_run``, say what that would change).

    Raises ``BackupError`` (field paths of the file) when this host cannot take the file,
    and lets ``ConfigConflict``, ``ConfigFileError`` and ``RegistryError`` through as the
    save service raises them. Nothing is changed unless everything is saved.
    """
    registry = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
    host_gpus = selectors.planning_gpus()
    planned = import_plan(backup, host_gpus=host_gpus, compose_services=registry.names())
    changes = [
        AssignmentChange(
            service=c.service,
            gpu_index=c.gpu_index,
            vram_budget_override=c.vram_budget_override,
            enabled=c.enabled,
        )
        for c in planned.choices
    ]
    try:
        validate_changes(changes, registry, host_gpus)
    except ConfigInputError as exc:
        raise _file_errors(exc, planned) from None

    warnings = list(planned.warnings)
    values = dict(backup.system_settings)
    strategy_setting = values.pop(STRATEGY_KEY, None)
    if strategy_setting is not None and strategy_setting["default"] != backup.strategy.value:
        # Every save makes its strategy the default (services.gpu_config_save), so the
        # file's own default cannot survive the import; say so rather than drop it silently.
        warnings.append(
            f"system_settings.{STRATEGY_KEY} is {strategy_setting['default']!r} in the file; "
            f"saving makes it {backup.strategy.value!r}, the file's strategy."
        )
    before_settings = _effective_settings()
    latest = selectors.latest_version()
    base = latest.number if latest else 0
    before_configuration = selectors.version_configuration(latest) if latest else None
    before_strategy = latest.strategy if latest else None

    if dry_run:
        with transaction.atomic():
            # The settings (the VRAM reserve) shape the plan: evaluate with them in place,
            # then roll everything back. Nothing outside the database is touched.
            system_settings_update(values=values)
            draft = gpu_config_draft(
                strategy=backup.strategy, changes=changes, from_scratch=_RESTORE_FROM_SCRATCH
            )
            transaction.set_rollback(True)
        if draft.error:
            raise BackupError([("strategy", draft.error)])
        after, config_warnings, new_number = draft.configuration, draft.warnings, None
    else:
        path = Path(settings.GPUCONFIG_OUTPUT_DIR) / ASSIGNMENTS_FILE
        saved = None
        # The import's turn covers its whole transaction. The save's own turn (nested here, so
        # not taken twice) would end before this transaction commits: a save waiting for the
        # turn would then find the newest version row still locked by this import, and fail
        # on the version number once it commits (a spurious 409).
        with configuration_write_turn():
            previous_file = read_or_none(path)
            try:
                with transaction.atomic():
                    system_settings_update(values=values)
                    saved = gpu_config_save(
                        user=user,
                        strategy=backup.strategy,
                        changes=changes,
                        expected_version=expected_version,
                        from_scratch=_RESTORE_FROM_SCRATCH,
                    )
            except ConfigInputError as exc:
                raise _file_errors(exc, planned) from None
            except BaseException:
                if saved is not None:
                    # The save wrote the file, then the outer commit failed: put it back.
                    put_back(path, previous_file)
                raise
        after = saved.draft.configuration
        config_warnings = saved.draft.warnings
        new_number = saved.version.number
        logger.info("configuration imported from a backup as version %s", new_number)
    lines = _change_lines(
        before_strategy=before_strategy,
        after_strategy=backup.strategy.value,
        before=before_configuration,
        after=after,
        before_settings=before_settings,
        after_settings={**before_settings, **values},
    )
    return ImportResult(
        dry_run=dry_run,
        base_version=base,
        new_version=new_number,
        changes=tuple(lines),
        warnings=tuple(warnings),
        config_warnings=tuple(w.message for w in config_warnings),
    )


def _file_errors(exc: ConfigInputError, planned: ImportPlan) -> BackupError:
    """The save service's ``assignments[k]`` (k-th change) as the file's ``assignments[i]``."""
    errors = []
    for key, message in exc.errors.items():
        text = "; ".join(map(str, message)) if isinstance(message, list) else str(message)
        head, sep, rest = key.partition("]")
        k = head.removeprefix("assignments[")
        if key.startswith("assignments[") and sep and k.isdigit() and int(k) < len(planned.choices):
            key = f"assignments[{planned.choices[int(k)].position}]{rest}"
        errors.append((key, text))
    return BackupError(errors)


def _change_lines(
    *,
    before_strategy: str | None,
    after_strategy: str,
    before: Configuration | None,
    after: Configuration,
    before_settings: Mapping[str, Any],
    after_settings: Mapping[str, Any],
) -> list[str]:
    """What the import changes, one line each: strategy, services, pins, settings."""
    lines = []
    if before_strategy != after_strategy:
        lines.append(f"strategy: {before_strategy or 'none saved'} → {after_strategy}")
    lines.extend(c.describe() for c in config_changes(before, after))
    for entry in after.assignments:
        old = before.get(entry.service) if before else None
        # A pin that changes without a move changes what later strategy runs may do.
        if old is not None and old.pinned != entry.pinned and entry.placed:
            lines.append(
                f"{entry.service}: pinned to GPU {entry.gpu_index}"
                if entry.pinned
                else f"{entry.service}: no longer pinned"
            )
    for key, spec in SPECS.items():
        if key != STRATEGY_KEY and before_settings.get(key) != after_settings.get(key):
            lines.append(f"{spec.label}: {before_settings.get(key)} → {after_settings.get(key)}")
    return lines
