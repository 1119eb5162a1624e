"""Deciding, explaining and saving GPU assignments.

``gpu_config_draft`` is the one place that turns saved settings + a user's changes into a
plan with warnings; the GET, Preview, Save and the settings page all go through it, so they
cannot disagree. ``gpu_config_save`` writes the rows, a version and the inspection file
together: the transaction commits only after the file is in place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from io import StringIO
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import IntegrityError, transaction
from django.utils import timezone
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from gpuconfig import selectors
from gpuconfig.changes import ServiceChange, config_changes
from gpuconfig.domain import (
    Evaluation,
    Gpu,
    Plan,
    PlanWarning,
    ServiceRequest,
    StrategyName,
    WarningCode,
)
from gpuconfig.files import write_atomic
from gpuconfig.models import ConfigVersion, GpuConfiguration, SystemSetting
from gpuconfig.registry import Registry, load_registry
from gpuconfig.strategies import StrategyError, plan
from gpuconfig.system_settings import SPECS, STRATEGY_KEY, validate_setting
from gpuconfig.validation import evaluate

logger = logging.getLogger(__name__)

ASSIGNMENTS_FILE = "gpu-assignments.yml"


class ConfigInputError(ValueError):
    """A request that cannot be saved; ``errors`` maps field paths to messages (API: 400)."""

    def __init__(self, errors: dict[str, Any]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class ConfigConflict(Exception):
    """Someone saved since the client read the configuration (API: 409)."""


class ConfigFileError(Exception):
    """The inspection file could not be written; nothing was saved (API: 500)."""


@dataclass(frozen=True)
class AssignmentChange:
    """A user's choice for one service, as sent by the API or the settings form."""

    service: str
    gpu_index: int | None = None  # None: let the strategy decide
    vram_budget_override: float | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Draft:
    """A complete proposed configuration: what the files would say, and why."""

    strategy: StrategyName
    registry: Registry
    gpus: tuple[Gpu, ...]
    requests: tuple[ServiceRequest, ...]
    plan: Plan | None
    evaluation: Evaluation | None
    warnings: tuple[PlanWarning, ...]
    error: str = ""  # the strategy could not run (manual with a service unassigned, no GPUs)
    saved_version: int = 0
    changes: list[ServiceChange] = field(default_factory=list)

    def resolved(self) -> dict[str, dict[str, Any]]:
        """The draft in ConfigVersion.assignments form (every registry service, enabled or not)."""
        by_service = {a.service: a for a in self.evaluation.assignments} if self.evaluation else {}
        gpus = {g.index: g for g in self.gpus}
        out: dict[str, dict[str, Any]] = {}
        for request in self.requests:
            name = request.service.name
            assignment = by_service.get(name)
            gpu = gpus.get(assignment.gpu_index) if assignment else None
            out[name] = {
                "gpu": assignment.gpu_index if assignment else None,
                "gpu_uuid": gpu.uuid if gpu else "",
                "gpu_name": gpu.name if gpu else "",
                "vram_budget": assignment.vram_budget_gb if assignment else None,
                "budget_auto_adjusted": assignment.budget_auto_adjusted if assignment else False,
                "pinned": request.pinned_gpu is not None,
                "vram_budget_override": request.budget_override_gb,
                "enabled": request.enabled,
            }
        return out


def _requests(
    *,
    strategy: StrategyName,
    registry: Registry,
    rows: Mapping[str, GpuConfiguration],
    saved_strategy: StrategyName | None,
    changes: Sequence[AssignmentChange],
) -> tuple[ServiceRequest, ...]:
    by_service = {c.service: c for c in changes}
    # Pins made under Manual pin *every* service; carried into an automatic strategy they
    # would leave it nothing to decide, so switching away from Manual starts unpinned.
    keep_pins = not (saved_strategy == StrategyName.MANUAL and strategy != StrategyName.MANUAL)
    requests = []
    for service in registry.services:
        row = rows.get(service.name)
        change = by_service.get(service.name)
        if change is not None:
            pin, budget, enabled = change.gpu_index, change.vram_budget_override, change.enabled
        elif row is not None:
            pin = row.gpu_index if keep_pins else None
            budget, enabled = row.vram_budget_override, row.enabled
        else:
            pin, budget, enabled = None, None, True
        if strategy == StrategyName.MANUAL and pin is None and row is not None:
            # Manual freezes what is saved: nothing moves unless the user moves it.
            pin = row.resolved_gpu_index
        requests.append(
            ServiceRequest(
                service=service, pinned_gpu=pin, enabled=enabled, budget_override_gb=budget
            )
        )
    return tuple(requests)


def _applied_assignments() -> dict[str, int] | None:
    """Where the managed services run now, as far as GPU Config knows (for external-use checks)."""
    version = selectors.latest_applied_version()
    if version is None:
        return None
    return {
        name: entry["gpu"]
        for name, entry in version.assignments.items()
        if entry.get("enabled", True) and entry.get("gpu") is not None
    }


def gpu_config_draft(
    *,
    strategy: StrategyName | None = None,
    changes: Sequence[AssignmentChange] = (),
    replan: bool = True,
) -> Draft:
    """What ``strategy`` would assign with ``changes`` applied on top of what is saved.

    ``replan=False`` evaluates the saved resolved assignments as they are (the GET view):
    warnings then reflect the inventory now, e.g. a GPU that has disappeared since the save.
    """
    registry = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
    config = selectors.system_config()
    latest = selectors.latest_version()
    saved_strategy = StrategyName(latest.strategy) if latest else None
    strategy = strategy or saved_strategy or config.default_strategy
    rows = selectors.saved_rows()
    gpus = selectors.planning_gpus()
    requests = _requests(
        strategy=strategy,
        registry=registry,
        rows=rows,
        saved_strategy=saved_strategy,
        changes=changes,
    )
    plan_result: Plan | None = None
    error = ""
    if not replan and latest is not None:
        assignments = {
            r.service.name: gpu
            for r in requests
            if r.enabled
            and r.service.name in rows
            and (gpu := rows[r.service.name].resolved_gpu_index) is not None
        }
        unassigned = [r for r in requests if r.enabled and r.service.name not in assignments]
        if unassigned:
            # A service added to the compose file since the last save: place it like the
            # strategy would, so the page shows a complete proposal.
            replan = True
    if replan or latest is None:
        try:
            plan_result = plan(strategy, gpus, requests)
            assignments = dict(plan_result.assignments)
        except StrategyError as exc:
            error, assignments = str(exc), {}
    evaluation = None
    warnings: list[PlanWarning] = []
    present = [g for g in gpus if g.present]
    if not present:
        warnings.append(PlanWarning(WarningCode.NO_GPUS, "No GPUs detected"))
    elif not error:
        evaluation = evaluate(
            gpus,
            requests,
            assignments,
            reserve_mb=config.vram_reserve_mb,
            applied=_applied_assignments(),
            strategy=strategy,
            over_capacity=plan_result.over_capacity if plan_result else (),
        )
        warnings.extend(evaluation.warnings)
    draft = Draft(
        strategy=strategy,
        registry=registry,
        gpus=gpus,
        requests=requests,
        plan=plan_result,
        evaluation=evaluation,
        warnings=_unique(warnings),
        error=error,
        saved_version=latest.number if latest else 0,
    )
    saved = latest.assignments if latest else None
    return replace(draft, changes=config_changes(saved, draft.resolved()))


def _unique(warnings: list[PlanWarning]) -> tuple[PlanWarning, ...]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for w in warnings:
        key = (w.code, w.service, w.gpu_index, w.message)
        if key not in seen:
            seen.add(key)
            out.append(w)
    return tuple(out)


def validate_changes(
    changes: Sequence[AssignmentChange], registry: Registry, gpus: Sequence[Gpu]
) -> None:
    """Refuse what can never be saved, with one message per field (nothing is written)."""
    errors: dict[str, Any] = {}
    seen: set[str] = set()
    known_gpus = {g.index for g in gpus}
    for i, change in enumerate(changes):
        where = f"assignments[{i}]"
        service = registry.get(change.service)
        if change.service in seen:
            errors[f"{where}.service"] = f"{change.service} appears more than once"
            continue
        seen.add(change.service)
        if service is None:
            errors[f"{where}.service"] = (
                f"unknown service {change.service!r}; managed services: "
                + ", ".join(registry.names())
            )
            continue
        if change.gpu_index is not None and change.gpu_index not in known_gpus:
            seen_list = ", ".join(str(i) for i in sorted(known_gpus)) or "none"
            errors[f"{where}.gpu_index"] = (
                f"GPU {change.gpu_index} has never been detected (detected: {seen_list})"
            )
        if change.vram_budget_override is not None and service.budget_env is None:
            errors[f"{where}.vram_budget_override"] = (
                f"{change.service} takes no VRAM budget (no gpuconfig.budget_env label)"
            )
    if errors:
        raise ConfigInputError(errors)


@dataclass(frozen=True)
class SaveResult:
    version: ConfigVersion
    draft: Draft


def gpu_config_save(
    *,
    user: AbstractBaseUser | AnonymousUser | None,
    strategy: StrategyName,
    changes: Sequence[AssignmentChange] = (),
    expected_version: int | None = None,
) -> SaveResult:
    """Save rows, a new version and ``gpu-assignments.yml`` as one step, or nothing at all."""
    registry = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
    validate_changes(changes, registry, selectors.planning_gpus())
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
            draft = gpu_config_draft(strategy=strategy, changes=changes)
            if draft.error:
                raise ConfigInputError({"strategy": draft.error})
            version = _store_version(
                number=current + 1,
                user=user,
                strategy=strategy,
                resolved=draft.resolved(),
                warnings=[w.as_dict() for w in draft.warnings],
            )
            write_file(version)
    except IntegrityError as exc:
        # Two first-ever saves raced for version 1: the loser is told, not silently dropped.
        raise ConfigConflict("Another save happened at the same moment. Reload and retry.") from exc
    logger.info("configuration version %s saved (%s)", version.number, strategy.value)
    return SaveResult(version=version, draft=draft)


def _store_rows(strategy: StrategyName, resolved: Mapping[str, Mapping[str, Any]]) -> None:
    existing = {row.service_name: row for row in GpuConfiguration.objects.select_for_update()}
    for name, entry in resolved.items():
        # A pinned service sits on its pin, so the resolved GPU *is* the pin.
        pinned = entry["gpu"] if entry.get("pinned") else None
        values = {
            "gpu_index": pinned,
            "strategy": StrategyName.MANUAL.value if pinned is not None else strategy.value,
            "vram_budget_override": entry.get("vram_budget_override"),
            "enabled": entry.get("enabled", True),
            "resolved_gpu_index": entry["gpu"],
            "vram_budget_gb": entry["vram_budget"],
            "budget_auto_adjusted": entry["budget_auto_adjusted"],
        }
        row = existing.get(name)
        if row is None:
            GpuConfiguration.objects.create(service_name=name, **values)
        else:
            for key, value in values.items():
                setattr(row, key, value)
            row.save()


def _store_version(
    *,
    number: int,
    user: AbstractBaseUser | AnonymousUser | None,
    strategy: StrategyName,
    resolved: dict[str, Any],
    warnings: list[dict[str, Any]],
) -> ConfigVersion:
    _store_rows(strategy, resolved)
    SystemSetting.objects.update_or_create(
        key=STRATEGY_KEY, defaults={"value": {"default": strategy.value}}
    )
    return ConfigVersion.objects.create(
        number=number,
        created_by=saving_user(user),
        strategy=strategy.value,
        assignments=resolved,
        warnings=warnings,
    )


@contextmanager
def _saving_with_file() -> Iterator[Callable[[ConfigVersion], None]]:
    """A transaction whose last step writes ``gpu-assignments.yml``.

    The rows commit only once the file is in place; if anything fails after the file was
    written (the commit itself included), the previous file is put back.
    """
    path = Path(settings.GPUCONFIG_OUTPUT_DIR) / ASSIGNMENTS_FILE
    previous_text = _read_or_none(path)
    written = False

    def write(version: ConfigVersion) -> None:
        nonlocal written
        try:
            write_atomic(path, render_assignments_file(version, timezone.now()))
        except OSError as exc:
            raise ConfigFileError(
                f"Could not write {path}: {exc.strerror or exc}. Nothing was saved."
            ) from exc
        written = True

    try:
        with transaction.atomic():
            yield write
    except BaseException:
        _restore(path, previous_text, written)
        raise


def gpu_config_restore(
    *, version: ConfigVersion, user: AbstractBaseUser | AnonymousUser | None
) -> ConfigVersion:
    """Save a copy of an older version as the newest one (used by the manual rollback)."""
    with _saving_with_file() as write_file:
        latest = ConfigVersion.objects.select_for_update().order_by("-number").first()
        restored = _store_version(
            number=(latest.number if latest else 0) + 1,
            user=user,
            strategy=StrategyName(version.strategy),
            resolved=dict(version.assignments),
            warnings=[
                *version.warnings,
                {
                    "code": "restored",
                    "message": f"Restored from version {version.number}",
                    "service": None,
                    "gpu_index": None,
                },
            ],
        )
        write_file(restored)
    return restored


def saving_user(user: AbstractBaseUser | AnonymousUser | None) -> User | None:
    """The user to record as author, or None for the command line and anonymous callers."""
    return user if isinstance(user, User) else None


def _read_or_none(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _restore(path: Path, previous_text: str | None, file_written: bool) -> None:
    """Put the inspection file back when the database did not commit after it was written."""
    if not file_written:
        return
    try:
        if previous_text is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, previous_text)
    except OSError:
        logger.exception("could not restore %s after a failed save", path)


def render_assignments_file(version: ConfigVersion, generated_at: datetime) -> str:
    """``config/gpu-assignments.yml`` in the design's format, for people to inspect."""
    doc = CommentedMap()
    doc["generated_at"] = generated_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["strategy"] = version.strategy
    doc["version"] = version.number
    assignments = CommentedMap()
    disabled = []
    for name, entry in sorted(version.assignments.items()):
        if not entry.get("enabled", True):
            disabled.append(name)
            continue
        item = CommentedMap(gpu=entry["gpu"], vram_budget=entry["vram_budget"])
        item.fa.set_flow_style()
        assignments[name] = item
    doc["assignments"] = assignments
    if disabled:
        doc["disabled"] = disabled
    yaml = YAML()
    yaml.default_flow_style = False
    out = StringIO()
    author = version.created_by.get_username() if version.created_by else "an unknown user"
    out.write(
        "# config/gpu-assignments.yml: generated by GPU Config from configuration version "
        f"{version.number}, saved by {author}.\n"
        "# Do not edit: it is rewritten on every save. Change assignments in the GPU Config UI.\n"
    )
    yaml.dump(doc, out)
    return out.getvalue()


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
