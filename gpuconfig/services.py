"""Saving GPU assignments: the rows, a version and gpu-assignments.yml together.

``gpu_config_save`` stores the :class:`~gpuconfig.domain.Configuration` of a draft
(``gpuconfig.drafts``) in the rows, a new version and the inspection file; the transaction
commits only after the file is in place, so nothing is ever half-saved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from common.errors import Refusal
from common.files import put_back, read_or_none, write_atomic
from gpuconfig import selectors
from gpuconfig.config_files import render_assignments_file
from gpuconfig.domain import Configuration, StrategyName
from gpuconfig.drafts import (
    AssignmentChange,
    ConfigInputError,
    Draft,
    gpu_config_draft,
    validate_changes,
)
from gpuconfig.models import ConfigVersion, GpuConfiguration, SystemSetting
from gpuconfig.system_settings import SPECS, STRATEGY_KEY, validate_setting

# The draft's names, for the callers that save what they drafted (API, page, backup).
__all__ = [
    "AssignmentChange",
    "ConfigConflict",
    "ConfigFileError",
    "ConfigInputError",
    "Draft",
    "SaveResult",
    "gpu_config_draft",
    "gpu_config_restore",
    "gpu_config_save",
    "saving_user",
    "system_settings_update",
    "validate_changes",
]

logger = logging.getLogger(__name__)

ASSIGNMENTS_FILE = "gpu-assignments.yml"
# The columns _store_rows writes (bulk_update does not set auto_now fields by itself).
_ROW_FIELDS = [
    "gpu_index",
    "strategy",
    "vram_budget_override",
    "enabled",
    "resolved_gpu_index",
    "vram_budget_gb",
    "budget_auto_adjusted",
    "updated_at",
]


class ConfigConflict(Refusal):
    """Someone saved since the client read the configuration (409)."""

    status_code = 409


class ConfigFileError(Refusal):
    """The inspection file could not be written; nothing was saved (500)."""

    status_code = 500


@dataclass(frozen=True)
class SaveResult:
    version: ConfigVersion
    draft: Draft
    # Nothing differed from the newest saved version: no version was added, ``version`` is it.
    unchanged: bool = False


def gpu_config_save(
    *,
    user: AbstractBaseUser | AnonymousUser | None,
    strategy: StrategyName,
    changes: Sequence[AssignmentChange] = (),
    expected_version: int | None = None,
    draft: Draft | None = None,
    only_if_changed: bool = False,
    from_scratch: bool = False,
) -> SaveResult:
    """Save rows, a new version and ``gpu-assignments.yml`` as one step, or nothing at all.

    ``only_if_changed`` (the page's Save and the API's PUT): when the strategy and
    configuration are what the newest version already stores, nothing is written and the
    result names that version, with ``unchanged`` set. (A backup import records itself as a
    version even when it matches: docs/backup.md.)

    ``draft``: the caller's ``gpu_config_draft(strategy=strategy, changes=changes)``, so that
    a request plans once; it is used only while no one has saved since it was made.
    ``from_scratch``: save the full re-plan, not the one that keeps running services in
    place (as the preview showed it).
    """
    if draft is None or draft.strategy != strategy or draft.from_scratch != from_scratch:
        draft = gpu_config_draft(strategy=strategy, changes=changes, from_scratch=from_scratch)
    validate_changes(changes, draft.registry, draft.gpus)
    try:
        with _saving_with_file() as write_file:
            # Lock the newest version row: saves queue up behind each other, and the version a
            # client read is compared with the one really current under the lock.
            latest = ConfigVersion.objects.select_for_update().order_by("-number").first()
            current = latest.number if latest else 0
            if expected_version is not None and expected_version != current:
                raise ConfigConflict(
                    f"The configuration was saved by someone else (version {current}) since you "
                    f"loaded version {expected_version}. Reload and apply your change again."
                )
            if draft.saved_version != current:
                # Someone saved between the draft and the lock: plan on what is saved now.
                draft = gpu_config_draft(
                    strategy=strategy, changes=changes, from_scratch=from_scratch
                )
            if draft.error:
                raise ConfigInputError({"strategy": draft.error})
            if (
                only_if_changed
                and latest is not None
                and selectors.configuration_unchanged(latest, strategy, draft.configuration)
            ):
                # Decided under the lock, against the version really newest: a save that
                # changes nothing adds no identical version (and writes no file).
                return SaveResult(version=latest, draft=draft, unchanged=True)
            version = _store_version(
                number=current + 1,
                user=user,
                strategy=strategy,
                configuration=draft.configuration,
                warnings=[w.as_dict() for w in draft.warnings],
            )
            write_file(version, draft.configuration)
    except IntegrityError as exc:
        # Two first-ever saves raced for version 1: the loser is told, not silently dropped.
        raise ConfigConflict("Another save happened at the same moment. Reload and retry.") from exc
    logger.info("configuration version %s saved (%s)", version.number, strategy.value)
    return SaveResult(version=version, draft=draft)


def _store_rows(strategy: StrategyName, configuration: Configuration) -> None:
    """One row per service, in a fixed number of queries whatever the number of services."""
    existing = {row.service_name: row for row in GpuConfiguration.objects.select_for_update()}
    now = timezone.now()
    changed: list[GpuConfiguration] = []
    created: list[GpuConfiguration] = []
    for entry in configuration.assignments:
        # A pinned service sits on its pin, so the resolved GPU *is* the pin.
        pinned = entry.gpu_index if entry.pinned else None
        row = existing.get(entry.service) or GpuConfiguration(service_name=entry.service)
        row.gpu_index = pinned
        row.strategy = StrategyName.MANUAL.value if pinned is not None else strategy.value
        row.vram_budget_override = entry.vram_budget_override
        row.enabled = entry.enabled
        row.resolved_gpu_index = entry.gpu_index
        row.vram_budget_gb = entry.vram_budget_gb
        row.budget_auto_adjusted = entry.budget_auto_adjusted
        row.updated_at = now
        (changed if entry.service in existing else created).append(row)
    if changed:
        GpuConfiguration.objects.bulk_update(changed, _ROW_FIELDS)
    if created:
        GpuConfiguration.objects.bulk_create(created)


def _store_version(
    *,
    number: int,
    user: AbstractBaseUser | AnonymousUser | None,
    strategy: StrategyName,
    configuration: Configuration,
    warnings: list[dict[str, Any]],
    restored_from: ConfigVersion | None = None,
) -> ConfigVersion:
    _store_rows(strategy, configuration)
    SystemSetting.objects.update_or_create(
        key=STRATEGY_KEY, defaults={"value": {"default": strategy.value}}
    )
    return ConfigVersion.objects.create(
        number=number,
        created_by=saving_user(user),
        strategy=strategy.value,
        assignments=configuration.to_json(),
        warnings=warnings,
        restored_from=restored_from,
    )


# PostgreSQL advisory lock that configuration writes take turns on ("gpuc").
CONFIG_WRITE_LOCK_KEY = 0x67707563


@contextmanager
def configuration_write_turn() -> Iterator[None]:
    """Saves, restores and the start of a rollback take turns, across processes.

    A save that names no version has nothing to conflict with: it waits for the one before it
    and plans on what that one saved, instead of failing on the version number both wanted.
    The turn is a session-level advisory lock, so it also covers putting the file back after a
    failed commit. SQLite needs none: its IMMEDIATE transactions already admit one writer.
    """
    held = getattr(connection, "gpuconfig_write_turns", 0)
    if connection.vendor != "postgresql" or held:
        # SQLite, or already our turn (a rollback restoring a version): nothing to take.
        connection.gpuconfig_write_turns = held + 1  # type: ignore[attr-defined]
        try:
            yield
        finally:
            connection.gpuconfig_write_turns = held  # type: ignore[attr-defined]
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [CONFIG_WRITE_LOCK_KEY])
    connection.gpuconfig_write_turns = 1  # type: ignore[attr-defined]
    try:
        yield
    finally:
        connection.gpuconfig_write_turns = 0  # type: ignore[attr-defined]
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [CONFIG_WRITE_LOCK_KEY])
        except DatabaseError:
            # The connection broke (the server then drops the lock with the session).
            logger.exception("could not release the configuration write lock")


@contextmanager
def _saving_with_file() -> Iterator[Callable[[ConfigVersion, Configuration], None]]:
    """A transaction whose last step writes ``gpu-assignments.yml``.

    The rows commit only once the file is in place; if anything fails after the file was
    written (the commit itself included), the previous file is put back.
    """
    path = Path(settings.GPUCONFIG_OUTPUT_DIR) / ASSIGNMENTS_FILE
    previous_text: str | None = None
    written = False

    def write(version: ConfigVersion, configuration: Configuration) -> None:
        nonlocal written
        text = render_assignments_file(
            configuration,
            strategy=version.strategy,
            version=version.number,
            author=version.created_by.get_username() if version.created_by else None,
            generated_at=timezone.now(),
        )
        try:
            write_atomic(path, text)
        except OSError as exc:
            raise ConfigFileError(
                f"Could not write {path}: {exc.strerror or exc}. Nothing was saved."
            ) from exc
        written = True

    with configuration_write_turn():
        try:
            with transaction.atomic():
                # Read in our turn: a save that waited puts back what the one before it wrote.
                previous_text = read_or_none(path)
                yield write
        except BaseException:
            if written:
                put_back(path, previous_text)
            raise


def gpu_config_restore(
    *, version: ConfigVersion, user: AbstractBaseUser | AnonymousUser | None
) -> ConfigVersion:
    """Save a copy of an older version as the newest one (used by the manual rollback).

    The copy records the version it copies in ``restored_from``; its "restored" warning says
    the same for people to read (a copy of a copy keeps only its own).
    """
    configuration = selectors.version_configuration(version)
    with _saving_with_file() as write_file:
        latest = ConfigVersion.objects.select_for_update().order_by("-number").first()
        restored = _store_version(
            number=(latest.number if latest else 0) + 1,
            user=user,
            strategy=StrategyName(version.strategy),
            configuration=configuration,
            warnings=[
                *(w for w in version.warnings if not _is_restored_note(w)),
                {
                    "code": RESTORED_WARNING_CODE,
                    "message": f"Restored from version {version.number}",
                    "service": None,
                    "gpu_index": None,
                },
            ],
            restored_from=version,
        )
        write_file(restored, configuration)
    return restored


# The code of the warning a rollback's copy carries: display only (see restored_from).
RESTORED_WARNING_CODE = "restored"


def _is_restored_note(warning: Any) -> bool:
    return isinstance(warning, dict) and warning.get("code") == RESTORED_WARNING_CODE


def saving_user(user: AbstractBaseUser | AnonymousUser | None) -> User | None:
    """The user to record as author, or None for the command line and anonymous callers."""
    return user if isinstance(user, User) else None


def system_settings_update(*, values: Mapping[str, Any]) -> list[str]:
    """Validate and store system settings; return the labels of those that changed.

    All or nothing: one bad value stores none of them.
    """
    cleaned = {key: validate_setting(key, value) for key, value in values.items()}
    current = dict(SystemSetting.objects.values_list("key", "value"))
    changed = []
    with transaction.atomic():
        for key, value in cleaned.items():
            if current.get(key, SPECS[key].default) == value:
                continue
            SystemSetting.objects.update_or_create(key=key, defaults={"value": value})
            changed.append(SPECS[key].label)
    return changed
