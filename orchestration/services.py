"""Apply & Restart, the public writes: start an apply, start a rollback, reap stale runs.

Starting a run checks what can be checked up front (podman, the compose file, another active
run), records the run and one step per changed service, and hands the run to the Celery
worker, which carries it out with ``orchestration.executor.apply_run_execute``. The database's
partial unique index allows one active run; a run whose worker stopped is marked interrupted.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from common.errors import Refusal
from devices.hosts import host_state
from devices.maintenance import gpu_maintenance_states
from devices.models import Host
from gpuconfig import selectors as config_selectors
from gpuconfig.changes import config_changes
from gpuconfig.domain import Configuration, StrategyName, runs_on
from gpuconfig.models import ConfigVersion
from gpuconfig.registry import RegistryError, load_registry
from gpuconfig.services import (
    AssignmentChange,
    Draft,
    configuration_write_turn,
    gpu_config_draft,
    gpu_config_restore,
    gpu_config_save,
    saving_user,
)
from gpuconfig.validation import accelerator_mismatch
from orchestration import fanout, hosts_observed, podman
from orchestration.models import (
    ACTIVE_RUN_STATUSES,
    ApplyRun,
    RunKind,
    RunStatus,
    ServiceStep,
)
from orchestration.observed import running_gpu, services_to_recreate
from orchestration.override import services_with_own_devices
from orchestration.probe import compose_dir, compose_tool, forget_probe
from orchestration.selectors import failed_current_version
from orchestration.stale_runs import apply_runs_reap_stale

# forget_probe is re-exported for the tests and the CLI, which reset the probe cache here.
__all__ = [
    "ApplyRefused",
    "apply_run_start",
    "compose_tool",
    "failed_version_discard",
    "forget_probe",
    "gpu_config_save_and_apply",
    "rollback_run_start",
]

logger = logging.getLogger(__name__)


class ApplyRefused(Refusal):
    """The apply cannot start; no run was started. ``status_code`` is what the API answers;
    ``saved``: the version ``gpu_config_save_and_apply`` saved before it was refused."""

    def __init__(self, message: str, status_code: int, saved: ConfigVersion | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.saved = saved

    @property
    def user_message(self) -> str:
        """The API's sentence: a refusal after the body was saved says what was kept (the page
        says it in its own "Saved as version N" line)."""
        if self.saved is None:
            return str(self)
        reason = str(self) if str(self).endswith((".", "?", "!")) else f"{self}."
        return (
            f"{reason} Your configuration was saved first as version {self.saved.number}; "
            "it is saved but not applied."
        )


@dataclass(frozen=True)
class SavedAndApplying:
    saved: ConfigVersion | None  # None: what was asked for was the saved version already
    run: ApplyRun


# --- starting a run -----------------------------------------------------------------------


def _check_base_file(managed: Sequence[str]) -> None:
    registry = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
    clashing = services_with_own_devices(registry.compose, managed)
    if clashing:
        raise ApplyRefused(
            f"{settings.GPUCONFIG_COMPOSE_FILE} already gives {', '.join(clashing)} devices of "
            "its own; podman-compose would add the override's GPU to them instead of replacing "
            "them. Remove `devices:` / deploy.resources.reservations.devices from those "
            "services in the base file and let GPU Config assign them.",
            503,
        )


@dataclass(frozen=True)
class _Step:
    service: str
    from_gpu: int | None  # what runs now (or, unobserved, what the previous version had)
    to_gpu: int | None
    reason: str


def _steps(
    target: ConfigVersion,
    previous: ConfigVersion | None,
    running: dict[str, podman.ContainerState] | None,
) -> list[_Step]:
    """The services a run recreates: those whose containers do not run as ``target`` says
    (drifted ones included, even when the version did not change). ``running=None``: the
    containers could not be observed (a compose tool that was not probed names no podman),
    so the difference between the two versions stands in."""
    configuration = config_selectors.version_configuration(target)
    before = config_selectors.version_configuration(previous) if previous else None
    # Services on other hosts (now or before) are not observed here: the difference between
    # the two versions says what their hosts must do (and a host with no change gets nothing).
    elsewhere = fanout.services_elsewhere(configuration, before)
    remote = [
        _Step(c.service, c.before.container_gpu, c.after.container_gpu, "")
        for c in config_changes(before, configuration)
        if c.service in elsewhere
    ]
    # ...those that run on a host where they are not placed (a service defined on several
    # hosts, started on each before GPU Config placed it on one): Apply stops them there...
    elsewhere_running = hosts_observed.running_on_hosts(
        [a.service for a in configuration.assignments]
    )
    if running is not None:
        for name in elsewhere:
            state = running.get(name)
            if state is not None and state.running:
                elsewhere_running.setdefault(name, set()).add(0)
    stepped = {step.service for step in remote}
    for entry in configuration.assignments:
        target_host = fanout.placed_host_number(entry)
        extra = elsewhere_running.get(entry.service, set()) - {target_host}
        if extra and entry.service not in stepped:
            remote.append(
                _Step(
                    entry.service,
                    None,
                    entry.container_gpu,
                    f"also running on {fanout.hosts_phrase(extra)}",
                )
            )
            stepped.add(entry.service)
    # ...and those whose host reported them drifted or not running: Apply repairs them there.
    placed = hosts_observed.placed_elsewhere(configuration)
    if placed:
        stepped = {step.service for step in remote}
        observed = hosts_observed.observed_elsewhere(configuration, placed)
        remote += [
            _Step(name, seen["gpu"], seen["planned_gpu"], seen["drift_reason"] or seen["state"])
            for name, seen in observed.items()
            if name not in stepped
            and seen["host_state"] == "online"
            and (seen["drifted"] or seen["state"] != "running")
        ]
    stepped = {step.service for step in remote}
    if running is None:
        changes = config_changes(before, configuration)
        return [
            _Step(c.service, c.before.container_gpu, c.after.container_gpu, "")
            for c in changes
            if c.service not in elsewhere and c.service not in stepped
        ] + remote
    return [
        _Step(
            service,
            running_gpu(running.get(service), configuration.by_service[service]),
            configuration.by_service[service].container_gpu,
            why.reason,
        )
        for service, why in services_to_recreate(configuration, running).items()
        if service not in elsewhere and service not in stepped
    ] + remote


def _running(tool: podman.ComposeTool) -> dict[str, podman.ContainerState] | None:
    """The managed services' containers now, read fresh (never the shared status cache)."""
    if tool.podman is None:
        return None
    registry = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
    managed = registry.names()
    project = settings.GPUCONFIG_COMPOSE_PROJECT
    definitions = registry.compose.get("services") or {}
    try:
        # By the names compose gives (one podman call); by label when anything is not plain
        # (a container gone, stopped, or not compose's), which is how drift is found too.
        return podman.read_containers(
            project,
            managed,
            names=podman.compose_container_names(project, managed, definitions),
            env=os.environ,
        )
    except podman.PodmanCommandError as exc:
        raise ApplyRefused(f"Cannot apply: cannot read the containers: {exc}", 503) from exc


def _start_run(
    *,
    kind: RunKind,
    target: ConfigVersion,
    previous: ConfigVersion | None,
    user: AbstractBaseUser | AnonymousUser | None,
    enqueue: bool,
    running: dict[str, podman.ContainerState] | None,
) -> ApplyRun:
    steps = _steps(target, previous, running)
    try:
        with transaction.atomic():
            run = ApplyRun.objects.create(
                kind=kind,
                version=target,
                previous_version=previous,
                requested_by=saving_user(user),
            )
            ServiceStep.objects.bulk_create(
                ServiceStep(
                    run=run,
                    service_name=step.service,
                    from_gpu=step.from_gpu,
                    to_gpu=step.to_gpu,
                    message=step.reason,
                )
                for step in steps
            )
    except IntegrityError:
        # The partial unique index allows one active run: the database settles the race.
        raise _already_running() from None
    if enqueue:
        _hand_to_worker(run)
    return run


def _hand_to_worker(run: ApplyRun) -> None:
    """Queue the committed run; if the broker refuses it now, end the run at once and say
    so, instead of leaving a queued run that blocks every Apply until it is reaped."""
    try:
        _enqueue(run.pk)
    except Exception as exc:  # kombu's and redis' connection errors have no common base
        message = f"Cannot apply: {broker_problem(exc)} Nothing was changed."
        ApplyRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.FAILED, finished_at=timezone.now(), error=message
        )
        raise ApplyRefused(message, 503) from exc


def broker_problem(exc: BaseException) -> str:
    """One sentence naming the broker that does not answer (no password in it)."""
    from config.celery import app  # the Celery app, configured from settings

    where = app.connection_for_write().as_uri()
    return (
        f"the task queue (Redis at {where}) does not answer ({exc.__class__.__name__}: "
        f"{str(exc)[:200]}). Start Redis (in the stack: the gpuconfig-redis service), then "
        "apply again."
    )


def _check_broker() -> None:
    """Refuse before any run row exists when the worker's broker cannot take the run."""
    from config.celery import app

    try:
        with app.connection_for_write(connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=0, timeout=3)
    except Exception as exc:  # kombu's and redis' connection errors have no common base
        raise ApplyRefused(
            f"Cannot apply: {broker_problem(exc)} Nothing was changed.", 503
        ) from exc


def _enqueue(run_id: Any) -> None:
    from config.celery import app
    from orchestration.tasks import apply_run_task  # the task module imports this one

    # The connection and the queue are the ones configured now, named on every send: Celery
    # keeps the producer pool and routing it made the first time the app talked to a broker
    # (a /health ping does), so a broker or queue configured later would otherwise be ignored
    # and the run would wait where no worker listens. One connection per Apply is cheap.
    with app.connection_for_write() as connection:
        apply_run_task.apply_async(
            (str(run_id),), queue=app.conf.task_default_queue, connection=connection
        )


def _preflight() -> podman.ComposeTool:
    apply_runs_reap_stale()
    _refuse_if_active()
    try:
        _check_base_file(load_registry(settings.GPUCONFIG_COMPOSE_FILE).names())
    except RegistryError as exc:
        raise ApplyRefused(exc.user_message, exc.status_code) from exc
    try:
        tool = compose_tool()
    except podman.ComposeUnavailable as exc:
        raise ApplyRefused(f"Cannot apply: {exc}", 503) from exc
    return tool


def _preflight_images(tool: podman.ComposeTool) -> None:
    """Every managed service's image is in podman's store (a tool that was not probed, as in
    tests that stand in for podman-compose, names no podman to ask)."""
    if tool.podman is not None:
        _check_images(tool.podman)


# ${VAR}, ${VAR:-default}, ${VAR-default} and $VAR, as compose interpolates image names.
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?-)([^}]*))?\}|\$(\w+)")


def _compose_environment() -> dict[str, str]:
    """What compose interpolates from: the project folder's .env, overridden by the
    environment (KEY=VALUE lines only; quotes stripped)."""
    values: dict[str, str] = {}
    dotenv = compose_dir() / ".env"
    try:
        text = dotenv.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        # podman-compose would silently fall back to the compose file's defaults (other image
        # names, other paths), and every check after this one would blame the wrong thing.
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ApplyRefused(
            f"Cannot apply: {dotenv} exists but cannot be read ({why}). podman-compose would "
            "silently use the compose file's defaults instead of its values: make it a "
            f"readable UTF-8 file for the user GPU Config runs as (uid {os.getuid()}).",
            503,
        ) from exc
    for line in text.splitlines():
        key, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and key and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("'\"")
    return {**values, **os.environ}


def _interpolate(text: str, env: dict[str, str]) -> str | None:
    """``text`` with its variables replaced, or None when one cannot be (``${VAR:?...}``,
    ``$$``): then the image is left to podman-compose."""
    if "$$" in text or "${" in _VARIABLE.sub("", text):
        return None

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        found = env.get(name)
        if match.group(2) == ":-" and not found:
            return match.group(3)
        if match.group(2) == "-" and found is None:
            return match.group(3)
        return found or ""

    return _VARIABLE.sub(value, text)


def _managed_images() -> dict[str, str]:
    """{image: service} for the managed services that name an image compose cannot build
    (no ``build:``), with compose's variables interpolated."""
    registry = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
    definitions = registry.compose.get("services") or {}
    env = _compose_environment()
    images: dict[str, str] = {}
    for name in registry.names():
        definition = definitions.get(name)
        if not isinstance(definition, dict) or "build" in definition:
            continue
        image = definition.get("image")
        resolved = _interpolate(image, env) if isinstance(image, str) else None
        if resolved:
            images.setdefault(resolved, name)
    return images


def _check_images(podman_path: str) -> None:
    """Refuse before anything is written when a managed service's image is not in podman's
    store: podman-compose would fail every recreate with "image not known" (no registry is
    assumed reachable, so a missing image is not pulled)."""
    images = _managed_images()
    try:
        missing = podman.missing_images(
            list(images), podman=podman_path, env=os.environ, timeout_s=podman.QUERY_TIMEOUT_S
        )
    except podman.PodmanCommandError as exc:
        raise ApplyRefused(f"Cannot apply: cannot check the images: {exc}", 503) from exc
    if missing:
        listed = "; ".join(
            f"the image {image} of {images[image]} is not in podman's store" for image in missing
        )
        raise ApplyRefused(
            f"Cannot apply: {listed}: build or pull it, then apply again. "
            "No container was touched.",
            503,
        )


def _refuse_wrong_vendor(target: ConfigVersion) -> None:
    """A service on a GPU it cannot run on (its gpuconfig.accelerator) would start without a
    usable GPU: the warning let it be saved, Apply refuses it, in one sentence."""
    registry = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
    for entry in Configuration.from_json(target.assignments).assignments:
        service = registry.get(entry.service)
        if service is None or not entry.placed or entry.gpu_index is None:
            continue
        if not runs_on(service.accelerator, entry.gpu_vendor):
            mismatch = accelerator_mismatch(
                entry.service, service.accelerator, entry.gpu_index, entry.gpu_vendor
            )
            raise ApplyRefused(f"Cannot apply: {mismatch}. Nothing was changed.", 400)


def _refuse_onto_cordoned(target: ConfigVersion) -> None:
    """A service pinned onto a GPU in maintenance that it does not run on now: the warning
    let it be saved, Apply refuses it. Services that run there now stay until it is drained
    (unpinned, the plan holds them there only because they run there)."""
    cordoned = gpu_maintenance_states()
    applied = config_selectors.latest_applied_version()
    running = Configuration.from_json(applied.assignments).placements() if applied else {}
    for entry in Configuration.from_json(target.assignments).assignments:
        if not entry.placed or entry.gpu_index is None or not entry.pinned:
            continue
        state = cordoned.get(entry.gpu_index)
        if state is None or not state.active or running.get(entry.service) == entry.gpu_index:
            continue
        raise ApplyRefused(
            f"Cannot apply: {entry.service} would start on GPU {entry.gpu_index}, which is in "
            f"maintenance ({state.reason}); pin it to another GPU or take GPU "
            f"{entry.gpu_index} out of maintenance. Nothing was changed.",
            400,
        )


def _refuse_unreachable_hosts(target: ConfigVersion, previous: ConfigVersion | None) -> None:
    """An apply that would touch a host whose agent is not online is refused before anything
    changes anywhere, in one sentence naming the host."""
    configuration = config_selectors.version_configuration(target)
    before = config_selectors.version_configuration(previous) if previous else None
    changed = [c.service for c in config_changes(before, configuration)]
    split = fanout.split_services(changed, configuration, before)
    for number in split.touched_numbers():
        host = Host.objects.filter(number=number).first()
        state = host_state(host) if host is not None else None
        if host is None or state is None:
            raise ApplyRefused(
                f"Cannot apply: GPU Config knows no host number {number} for GPU indexes "
                f"{number * 100}-{number * 100 + 99}. Nothing was changed.",
                409,
            )
        if state.label != "online":
            since = f" since {state.since:%Y-%m-%d %H:%M:%S %Z}" if state.since else ""
            there = split.remote[number]
            raise ApplyRefused(
                f"Cannot apply: host {host.name} is {state.label}{since}, and this apply would "
                f"change {', '.join(sorted(there.recreate + there.stop))} there. "
                "Nothing was changed.",
                409,
            )


def apply_run_start(
    *, user: AbstractBaseUser | AnonymousUser | None, enqueue: bool = True
) -> ApplyRun:
    """Start applying the latest saved version; the Celery worker does the work
    (``enqueue=False``: the caller runs ``apply_run_execute`` itself, as the CLI does)."""
    tool = _preflight()
    if enqueue:
        _check_broker()
    # In turn with saves, imports, discards and rollbacks: what is applied is read after the
    # turn is taken, so a rollback that just restored a version cannot be undone by an apply
    # that read the version before it.
    with configuration_write_turn():
        _refuse_if_active()
        target = config_selectors.latest_version()
        if target is None:
            raise ApplyRefused("Nothing to apply: save a configuration first.", 400)
        _refuse_wrong_vendor(target)
        _refuse_onto_cordoned(target)
        previous = config_selectors.latest_applied_version()
        _refuse_unreachable_hosts(target, previous)
        _preflight_images(tool)
        return _start_run(
            kind=RunKind.APPLY,
            target=target,
            previous=previous,
            user=user,
            enqueue=enqueue,
            running=_running(tool),
        )


def _already_running() -> ApplyRefused:
    """The one refusal of a second run, whether the check or the database's index finds it."""
    return ApplyRefused("Another apply is already running; wait for it to finish.", 409)


def _refuse_if_active() -> None:
    if ApplyRun.objects.filter(status__in=ACTIVE_RUN_STATUSES).exists():
        raise _already_running()


def gpu_config_save_and_apply(
    *,
    user: AbstractBaseUser | AnonymousUser | None,
    strategy: StrategyName,
    changes: Sequence[AssignmentChange] = (),
    expected_version: int | None = None,
    draft: Draft | None = None,
    enqueue: bool = True,
    from_scratch: bool = False,
) -> SavedAndApplying:
    """Save the configuration asked for when it differs from the newest saved version, then
    start applying the newest saved version (the page's Apply, and the API's apply with a
    body). The save's own errors pass through (nothing saved, nothing applied); a refused
    apply after a save is an ``ApplyRefused`` whose ``saved`` is the version kept.
    ``from_scratch``: save the full re-plan (gpuconfig.services.gpu_config_save)."""
    if draft is None or draft.strategy != strategy or draft.from_scratch != from_scratch:
        draft = gpu_config_draft(strategy=strategy, changes=changes, from_scratch=from_scratch)
    saved = None
    if config_selectors.draft_unsaved(draft, config_selectors.latest_version()):
        saved = gpu_config_save(
            user=user,
            strategy=strategy,
            changes=changes,
            expected_version=expected_version,
            draft=draft,
            from_scratch=from_scratch,
        ).version
    try:
        run = apply_run_start(user=user, enqueue=enqueue)
    except ApplyRefused as exc:
        raise ApplyRefused(str(exc), exc.status_code, saved=saved) from exc
    return SavedAndApplying(saved=saved, run=run)


def rollback_run_start(
    *, user: AbstractBaseUser | AnonymousUser | None, enqueue: bool = True
) -> ApplyRun:
    """Go back to the version applied before the current one.

    The rollback is saved as a new version (a copy of the old one) before it is applied, so
    the database, gpu-assignments.yml and the override keep telling the same story.
    """
    tool = _preflight()
    if enqueue:
        _check_broker()
    with configuration_write_turn():
        # In turn: of rollbacks (and applies) pressed at once, the first starts its run; the
        # others find that run here, before restoring anything, and are refused (409).
        _refuse_if_active()
        return _rollback_run_start(user=user, enqueue=enqueue, tool=tool)


def _rollback_run_start(
    *, user: AbstractBaseUser | AnonymousUser | None, enqueue: bool, tool: podman.ComposeTool
) -> ApplyRun:
    current = config_selectors.latest_applied_version()
    if current is None:
        raise ApplyRefused("Nothing has been applied yet, so there is nothing to roll back.", 400)
    older = config_selectors.applied_before(current)
    if older is None:
        raise ApplyRefused(
            f"Version {current.number} is the only one ever applied; there is no earlier one.",
            400,
        )
    # After the 400s above (they say more), before anything is restored.
    _preflight_images(tool)
    restored = gpu_config_restore(version=older, user=user)
    return _start_run(
        kind=RunKind.ROLLBACK,
        target=restored,
        previous=current,
        user=user,
        enqueue=enqueue,
        running=_running(tool),
    )


@dataclass(frozen=True)
class Discarded:
    failed: ConfigVersion  # the version whose apply was rolled back
    running: ConfigVersion  # the applied version, saved again
    restored: ConfigVersion  # its copy, now the newest saved version


def failed_version_discard(*, user: AbstractBaseUser | AnonymousUser | None) -> Discarded:
    """Discard the newest saved version whose apply rolled back: the running version is saved
    again as the newest (nothing restarts). What to discard is read in the write turn, so a
    save or an apply that came first is never discarded by mistake."""
    with configuration_write_turn():
        failed = failed_current_version()
        if failed is None:
            raise ApplyRefused("There is no rolled-back version to discard.", 409)
        restored = gpu_config_restore(version=failed.running, user=user)
    return Discarded(failed=failed.failed, running=failed.running, restored=restored)
