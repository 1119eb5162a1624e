"""What each region of the Settings pages renders: the context of each fragment.

The GPU Configuration page has five regions (the GPU cards, the form, the apply status, the
history and its version diff); each function here gathers one region's context from the
selectors and the presenters. The views combine them: a full page takes them all, a fragment
only its own (plus the regions it changed, sent out of band).
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from common.parsers import version_number
from devices.models import LOCAL_HOST_NAME
from gpuconfig import selectors
from gpuconfig.changes import config_changes
from gpuconfig.domain import STRATEGY_LABELS, StrategyName
from gpuconfig.measured import gpu_inventory_view
from gpuconfig.models import ConfigVersion
from gpuconfig.registry import RegistryError
from gpuconfig.services import Draft, gpu_config_draft
from orchestration import selectors as run_selectors
from orchestration.models import RunKind, RunStatus, StepStatus
from pages.forms import RefusedFields, SystemSettingsForm
from pages.hosts import (
    GpuPlaces,
    gpu_places,
    gpu_places_for,
    host_rows,
    places_of,
    remember_gpu_places,
)
from pages.measured_vram import measured_text_by_service
from pages.plan_restarts import plan_restarts, restarting
from pages.presenters import (
    assignment_rows,
    described,
    gpu_cards,
    headroom_line,
    planned_per_gpu,
    strategy_options,
    warning_note,
)

HISTORY_LENGTH = 20


def can_edit(request: HttpRequest) -> bool:
    return bool(request.user.is_staff)


def draft_or_error(**kwargs: Any) -> Draft | str:
    """The configuration on screen, or why the compose file cannot give one."""
    try:
        return gpu_config_draft(replan=False, **kwargs)
    except RegistryError as exc:
        return exc.user_message


def full_context(
    request: HttpRequest, draft: Draft | str | None = None, **config: Any
) -> dict[str, Any]:
    hosts = hosts_context(request)  # first: it reads the hosts' GPUs for the request
    return {
        "tab": "gpu",
        **cards_context(gpu_places_for(request)),
        **config_context(request, draft_or_error() if draft is None else draft, **config),
        **status_context(request),
        **history_context(request),
        **hosts,
    }


def cards_context(places: GpuPlaces | None = None) -> dict[str, Any]:
    """The GPU cards: live readings from the shared sample (never NVML per request).
    ``places``: the remote hosts' GPUs, when the caller has read them."""
    inventory = gpu_inventory_view()
    cards = gpu_cards(inventory["gpus"], gpu_places() if places is None else places)
    return {
        "inventory": inventory,
        "cards": cards,
        "any_present": any(card["present"] for card in cards),
        "gpu_poll_seconds": selectors.system_config().gpu_poll_seconds,
    }


def config_context(
    request: HttpRequest,
    draft: Draft | str,
    *,
    form_version: int | None = None,
    refused: RefusedFields | None = None,
    notices: list[tuple[str, str]] | None = None,
    show_diff: bool = False,
    conflict: bool = False,
    confirm_apply: bool = False,
) -> dict[str, Any]:
    """The form: strategy choices, the table's rows, warnings, notices and the buttons."""
    editable = can_edit(request)
    if isinstance(draft, str):
        return {
            "config_error": draft,
            "can_edit": editable,
            "controls_disabled": True,
            "notices": notices or [],
        }
    no_gpus = not any(g.present for g in draft.gpus)
    saved = selectors.latest_version()
    places = gpu_places_for(request)
    running = run_selectors.running_services_view()
    return {
        "draft": draft,
        "can_edit": editable,
        "no_gpus": no_gpus,
        "controls_disabled": no_gpus or not editable,
        "strategies": strategy_options(
            draft.strategy,
            selectors.recommended_strategy(draft.gpus, draft.requests, reserve_mb=draft.reserve_mb),
        ),
        "strategy_label": STRATEGY_LABELS[draft.strategy],
        "rows": assignment_rows(draft, refused=refused, places=places, local_host=LOCAL_HOST_NAME),
        # The Host column: only once some GPU is on another host (one host reads as before).
        "hosts_column": bool(places),
        "measured": measured_text_by_service(),  # the table's "Measured" column
        # The table's "Running on" column: what podman says each container really got
        # (the shared read the Services region uses), beside the GPU planned.
        "running": running["containers"],
        "running_available": running["available"],
        "planned": planned_per_gpu(draft, places),
        "headroom_line": headroom_line(draft),
        "warnings": [(w, warning_note(w)) for w in draft.warnings],
        "form_version": draft.saved_version if form_version is None else form_version,
        "unsaved": selectors.draft_unsaved(draft, saved),
        "saved_strategy_label": STRATEGY_LABELS[StrategyName(saved.strategy)] if saved else "",
        "show_diff": show_diff,
        "confirm_apply": confirm_apply,
        "diff": described(draft.changes, places),
        # What Apply would restart, and this plan beside the re-plan from scratch (issue 19).
        "plan_restarts": plan_restarts(
            draft,
            # Asked of podman only where the answer is shown: the preview and the confirmation.
            run_selectors.planned_moves(draft.configuration, restarting(draft))
            if (show_diff or confirm_apply) and running["available"]
            else None,
        ),
        "from_scratch": draft.from_scratch,
        "automatic": draft.strategy != StrategyName.MANUAL,
        "notices": notices or [],
        "conflict": conflict,
        # Apply is shown disabled while a run is active (the server refuses it anyway).
        "run_active": run_selectors.run_is_active(),
        "failed_apply": run_selectors.failed_current_version(),
        **apply_readiness_context(),
    }


def apply_readiness_context() -> dict[str, Any]:
    """Whether Apply & Restart can work here, shown before it is pressed: disabled with the
    reason, to everyone (read-only users too), rather than a dialog promising restarts."""
    ready, reason = run_selectors.apply_readiness()
    return {"apply_ready": ready, "apply_unready_reason": reason}


def status_context(request: HttpRequest, *, was_active: bool = False) -> dict[str, Any]:
    """Apply progress and the containers now; polled while a run is active."""
    # A run whose worker died is ended by this read too (orchestration.stale_runs): the
    # worker's beat cannot do it once the worker is gone.
    status = run_selectors.apply_status()
    run = status["run"]
    active = bool(run and run["active"])
    steps = run["steps"] if run else []
    applied = selectors.latest_applied_version()
    latest = selectors.latest_version()
    target = run_selectors.rollback_offer(run)
    return {
        "status": status,
        # Green only when every service runs as applied: drift is never "all is well".
        "status_ok": status["available"] and status["summary"].startswith("All services running"),
        "drifted_services": [
            (name, status["containers"][name]["drift_reason"]) for name in status["drifted"]
        ],
        "run": _run_labels(run) if run else None,
        "run_active": active,
        "run_finished_now": was_active and not active,
        **run_selectors.step_progress(steps, active=active),
        "applied_version": applied.number if applied else None,
        "saved_version": latest.number if latest else None,
        "status_poll_seconds": selectors.system_config().status_poll_seconds,
        "can_edit": can_edit(request),
        "rollback_target": target,
        "rollback_offered": target is not None,
        # Rollback restarts containers as Apply does: offered only where that can work.
        **apply_readiness_context(),
        # The form's buttons are refreshed when a run ends: they say when it rolled back.
        "failed_apply": None if active else run_selectors.failed_current_version(),
    }


def _run_labels(run: dict[str, Any]) -> dict[str, Any]:
    return {
        **run,
        "kind_label": RunKind(run["kind"]).label,
        "status_label": RunStatus(run["status"]).label,
        "steps": [{**s, "status_label": StepStatus(s["status"]).label} for s in run["steps"]],
        # A rollback runs a copy of an older version: name the version it goes back to.
        "restores": (
            selectors.restored_from(run["version"]) if run["kind"] == RunKind.ROLLBACK else None
        ),
    }


def history_context(request: HttpRequest) -> dict[str, Any]:
    """The saved versions, and the one ``?compare=`` asks to compare with the current one."""
    versions = list(selectors.version_list()[:HISTORY_LENGTH])
    current = versions[0] if versions else None
    compare: ConfigVersion | None = None
    raw = request.GET.get("compare", "")
    number = version_number(raw) if raw else None  # ASCII digits only: "²".isdigit() is True
    if number is not None:
        by_number = {v.number: v for v in versions}
        compare = by_number.get(number) or selectors.version_list().filter(number=number).first()
    changes = []
    if compare is not None and current is not None:
        changes = described(
            config_changes(
                selectors.version_configuration(compare),
                selectors.version_configuration(current),
            )
        )
    return {
        "versions": versions,
        "current_version": current,
        "compare": compare,
        "compare_error": f"There is no version {raw}." if raw and compare is None else "",
        "compare_changes": changes,
        "can_edit": can_edit(request),
    }


def hosts_context(
    request: HttpRequest,
    *,
    joining: dict[str, str] | None = None,
    notices: list[tuple[str, str]] | None = None,
    errors: dict[str, str] | None = None,
    typed_name: str = "",
) -> dict[str, Any]:
    """The Hosts section. ``joining``: the host just added (or given a new join token), its
    token and the agent's command, shown this once; ``errors``: the add form's refused
    fields, with ``typed_name`` kept in the field."""
    rows = host_rows()
    remember_gpu_places(request, places_of(rows))
    return {
        "hosts": rows,
        "host_joining": joining,
        "host_notices": notices or [],
        "host_errors": errors or {},
        "host_typed_name": typed_name,
        "join_token_hours": settings.GPUCONFIG_JOIN_TOKEN_HOURS,
        "can_edit": can_edit(request),
    }


# --- System tab --------------------------------------------------------------------------------


def system_context(
    request: HttpRequest,
    form: SystemSettingsForm,
    notices: list[tuple[str, str]],
    loaded: str | None = None,
) -> dict[str, Any]:
    """``loaded``: the stored state the form was drawn from (``system_stored_state``); a
    fresh form carries the state now."""
    return {
        "tab": "system",
        "form": form,
        "loaded": loaded or system_stored_state(),
        "notices": notices,
        "can_edit": can_edit(request),
        "environment": _environment(),
        "strategy_in_force": _strategy_in_force(),
    }


def system_stored_state() -> str:
    """A short fingerprint of what the System form shows from the database (the settings, and
    whether a version exists, which decides whether the default strategy is editable). The
    form carries it, so a save from a page drawn before an import or another user's save is
    refused instead of writing the old values back over theirs."""
    latest = selectors.latest_version()
    shown = f"{selectors.system_config()!r}|{latest is not None}"
    return hashlib.sha256(shown.encode()).hexdigest()[:16]


def system_form(data: Any = None) -> SystemSettingsForm:
    """The System form. The default strategy is only editable until the first save: after
    it, the saved configuration's strategy is the one in force (one source of truth)."""
    saved = selectors.latest_version() is not None
    if data is not None:
        return SystemSettingsForm(data, strategy_saved=saved)
    initial = SystemSettingsForm.initial_from(selectors.system_config())
    return SystemSettingsForm(initial=initial, strategy_saved=saved)


def _strategy_in_force() -> dict[str, Any] | None:
    """The saved configuration's strategy and version, or None before the first save."""
    latest = selectors.latest_version()
    if latest is None:
        return None
    return {"label": STRATEGY_LABELS[StrategyName(latest.strategy)], "version": latest.number}


def _environment() -> list[tuple[str, str]]:
    """Settings that come from the environment (read-only here; see docs/configuration.md)."""
    simulated = settings.GPUCONFIG_SIMULATED_GPUS
    return [
        ("Compose file", str(settings.GPUCONFIG_COMPOSE_FILE)),
        ("Generated files", str(settings.GPUCONFIG_OUTPUT_DIR)),
        ("Compose command", " ".join(settings.GPUCONFIG_COMPOSE_COMMAND)),
        ("GPU source", f"simulated file {simulated}" if simulated else "NVML, then nvidia-smi"),
        ("GPU sample interval", f"{settings.GPUCONFIG_SAMPLE_SECONDS:g} s"),
    ]
