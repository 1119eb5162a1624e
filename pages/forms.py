"""Forms of the Settings pages (what the table renders is in pages/presenters.py).

The GPU Configuration form is built from the service registry: one GPU choice per service and a
budget field for services that take one. Parsing it gives ``AssignmentChange`` values for the
same services the API uses, so the page and the API cannot disagree about what a choice means.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from django import forms
from django.conf import settings

from gpuconfig.domain import (
    STRATEGY_LABELS,
    Service,
    StrategyName,
)
from gpuconfig.registry import Registry, load_registry
from gpuconfig.services import (
    AssignmentChange,
    ConfigInputError,
    Draft,
    gpu_config_draft,
    validate_changes,
)
from gpuconfig.system_settings import (
    GPU_POLL_KEY,
    RESERVE_KEY,
    SPECS,
    STATUS_POLL_KEY,
    STRATEGY_KEY,
    SettingError,
    SystemConfig,
    validate_setting,
)

ACTIONS = ("revalidate", "preview", "save", "apply", "rollback")
OFF = "off"  # the GPU choice that disables a service (no GPU reservation)
MIN_BUDGET_GB = 0.1
MAX_BUDGET_GB = 2000.0  # the API's bound: no GPU holds 2 TB
# A budget as people type it: digits with at most one decimal point, ASCII only. No sign,
# exponent, grouping or decimal comma: "3,5" (35 once a browser drops the comma as a
# thousands separator) and "1e3" (1000) are refused with a message, never misread.
_PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_COMMA_DECIMAL = re.compile(r"[0-9]*,[0-9]+")


def budget_gb(raw: str) -> float | None:
    """The budget typed in a budget field, in GiB (None: empty, automatic), or a
    ValidationError saying how to write it."""
    text = raw.strip()
    if not text:
        return None
    if _COMMA_DECIMAL.fullmatch(text):
        fixed = text.replace(",", ".")
        raise forms.ValidationError(
            f"Use a decimal point: {fixed if fixed[0] != '.' else '0' + fixed}."
        )
    if not _PLAIN_DECIMAL.fullmatch(text):
        shown = text if len(text) <= 12 else text[:12] + "…"
        raise forms.ValidationError(
            f"Type a plain number of GiB with a decimal point, such as 3.5 (not {shown!r})."
        )
    value = float(text)
    if not MIN_BUDGET_GB <= value <= MAX_BUDGET_GB:
        raise forms.ValidationError(
            f"Must be between {MIN_BUDGET_GB:g} and {MAX_BUDGET_GB:g} GiB, got {value:g}."
        )
    return value


class BudgetField(forms.CharField):
    """A VRAM budget in GiB, typed as a plain decimal with a point (``budget_gb``)."""

    def __init__(self) -> None:
        super().__init__(required=False, max_length=32, strip=True)

    def clean(self, value: Any) -> float | None:
        return budget_gb(super().clean(value))


def gpu_field(service: str) -> str:
    return f"gpu-{service}"


def budget_field(service: str) -> str:
    return f"budget-{service}"


def budget_auto_field(service: str) -> str:
    # The automatic budget the page showed: a budget posted back unchanged is no override.
    return f"budget_auto-{service}"


class GpuConfigForm(forms.Form):
    """What the GPU Configuration form posts: a strategy and, per service, a GPU and a budget."""

    strategy = forms.ChoiceField(choices=[(s.value, STRATEGY_LABELS[s]) for s in StrategyName])
    # The strategy the table on the page was planned with: when the user picks another one,
    # the table's choices belong to the old plan and are not carried over.
    table_strategy = forms.ChoiceField(
        choices=[("", "")] + [(s.value, s.value) for s in StrategyName], required=False
    )
    version = forms.IntegerField(min_value=0, required=False)
    action = forms.ChoiceField(choices=[(a, a) for a in ACTIONS], required=False)
    # "Re-plan from scratch": an automatic strategy plans as if nothing ran yet, instead of
    # keeping running services where they are (gpuconfig.drafts, issue 19).
    from_scratch = forms.BooleanField(required=False)

    def __init__(self, *args: Any, services: Sequence[Service], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.services = tuple(services)
        for service in self.services:
            self.fields[gpu_field(service.name)] = forms.CharField(required=False, max_length=8)
            if service.budget_env is not None:
                self.fields[budget_field(service.name)] = BudgetField()
                self.fields[budget_auto_field(service.name)] = forms.CharField(
                    required=False, max_length=16
                )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for service in self.services:
            name = gpu_field(service.name)
            raw = (cleaned.get(name) or "").strip()
            # ASCII digits only: "²".isdigit() is True, and int("²") then fails.
            if raw not in ("", OFF) and not (raw.isascii() and raw.isdigit()):
                self.add_error(name, f"{raw!r} is not a GPU; choose one from the list.")
        return cleaned

    @property
    def chosen_strategy(self) -> StrategyName | None:
        value = self.cleaned_data.get("strategy") if hasattr(self, "cleaned_data") else None
        return StrategyName(value) if value else None

    @property
    def chosen_action(self) -> str:
        return (self.cleaned_data.get("action") if hasattr(self, "cleaned_data") else "") or (
            "revalidate"
        )

    def strategy_switched(self) -> bool:
        table = self.cleaned_data.get("table_strategy") or ""
        return bool(table) and table != self.cleaned_data.get("strategy")

    def changes(self) -> list[AssignmentChange]:
        """The user's choice for every service the page showed (none after a strategy switch).

        Services missing from the post (added to the compose file after the page loaded) and
        services whose fields did not validate keep what is saved.
        """
        return [] if self.strategy_switched() else self.posted_changes()

    def posted_changes(self) -> list[AssignmentChange]:
        """The choices posted for the table on the page, whatever strategy was picked."""
        out = []
        for service in self.services:
            name = gpu_field(service.name)
            if name not in self.data or name in self.errors:
                continue
            # A refused budget leaves the row's GPU choice standing (the budget stays
            # automatic in the plan on screen; the field keeps what was typed).
            raw = (self.cleaned_data.get(name) or "").strip()
            out.append(
                AssignmentChange(
                    service=service.name,
                    gpu_index=int(raw) if raw.isascii() and raw.isdigit() else None,
                    vram_budget_override=self._budget_override(service),
                    enabled=raw != OFF,
                )
            )
        return out

    def _budget_override(self, service: Service) -> float | None:
        if service.budget_env is None or budget_field(service.name) in self.errors:
            return None
        value = self.cleaned_data.get(budget_field(service.name))
        if value is None:
            return None  # an empty field means "automatic"
        shown = (self.cleaned_data.get(budget_auto_field(service.name)) or "").strip()
        try:
            if shown and math.isclose(float(shown), value):
                return None  # the automatic budget, posted back as it was shown
        except ValueError:
            pass
        return round(float(value), 3)

    def field_errors(self) -> dict[str, str]:
        """The refused GPU and budget fields: field name -> "VRAM budget: message"."""
        out: dict[str, str] = {}
        for service in self.services:
            for name in (gpu_field(service.name), budget_field(service.name)):
                if name in self.errors:
                    label = "VRAM budget" if name.startswith("budget") else "GPU"
                    out[name] = f"{label}: " + " ".join(str(e) for e in self.errors[name])
        return out

    def typed(self) -> dict[str, str]:
        """What was typed in the budget fields of the rows with a refused field, as typed:
        the page shows it back instead of the value it could not use."""
        out: dict[str, str] = {}
        for service in self.services:
            name = budget_field(service.name)
            row_refused = name in self.errors or gpu_field(service.name) in self.errors
            if row_refused and name in self.data:
                out[name] = str(self.data.get(name, ""))[:32]
        return out


@dataclass(frozen=True)
class RefusedFields:
    """The refused fields of the table's rows, for the page to mark and to show back."""

    errors: dict[str, str]  # field name (gpu-SERVICE, budget-SERVICE) -> message
    typed: dict[str, str]  # budget field name -> what was typed there, as typed


@dataclass(frozen=True)
class GpuForm:
    """A post of the GPU form, parsed: the plan it asks for, its changes, the version it was
    loaded from, and its problems (per service for the rows, and the rest)."""

    draft: Draft
    changes: list[AssignmentChange]
    version: int | None
    # Refused fields of the rows: field name (gpu-SERVICE, budget-SERVICE) -> message.
    errors: dict[str, str] = dataclass_field(default_factory=dict)
    problems: list[str] = dataclass_field(default_factory=list)
    fields_ok: bool = True  # every field parsed (a bad version or action has no row)
    # What was typed in the budget fields of refused rows (field name -> text).
    typed: dict[str, str] = dataclass_field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.fields_ok and not self.errors and not self.problems

    @property
    def refused(self) -> RefusedFields:
        return RefusedFields(errors=self.errors, typed=self.typed)


def parse_gpu_form(data: Mapping[str, Any]) -> GpuForm:
    """Check a post against the registry and the GPUs (RegistryError: no compose file)."""
    registry = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
    form = GpuConfigForm(data, services=registry.services)
    form_ok = form.is_valid()
    changes = form.changes() if form.chosen_strategy is not None else []
    if form.chosen_strategy == StrategyName.MANUAL and form.strategy_switched():
        changes = _plan_on_screen(form, registry)
    from_scratch = bool(form.cleaned_data.get("from_scratch"))
    draft = gpu_config_draft(
        strategy=form.chosen_strategy, changes=changes, from_scratch=from_scratch
    )
    errors = form.field_errors()
    problems = ["Choose one of the five strategies."] if "strategy" in form.errors else []
    try:
        validate_changes(changes, draft.registry, draft.gpus)
    except ConfigInputError as exc:
        for refused in exc.fields:
            name = _FIELD_OF.get(refused.field)
            if refused.service and name:
                label = "VRAM budget" if refused.field == "vram_budget_override" else "GPU"
                errors.setdefault(name(refused.service), f"{label}: {refused.message}")
            else:
                problems.append(refused.message)
    version = form.cleaned_data.get("version")
    return GpuForm(draft, changes, version, errors, problems, fields_ok=form_ok, typed=form.typed())


# The service layer's field names -> the form field of the row they belong to.
_FIELD_OF = {"gpu_index": gpu_field, "vram_budget_override": budget_field}


def _plan_on_screen(form: GpuConfigForm, registry: Registry) -> list[AssignmentChange]:
    """Switching to Manual starts from the table on the page: every service where the plan
    shown put it (the strategy the table was planned with, and the choices posted for it)."""
    posted = form.posted_changes()
    try:
        shown = gpu_config_draft(
            strategy=StrategyName(form.cleaned_data["table_strategy"]), changes=posted
        )
        validate_changes(posted, registry, shown.gpus)
    except ConfigInputError:
        return []  # the table had refused choices: Manual starts from what is in force
    return [
        AssignmentChange(
            service=a.service,
            gpu_index=a.gpu_index,
            vram_budget_override=a.vram_budget_override,
            enabled=a.enabled,
        )
        for a in shown.configuration.assignments
    ]


# --- the System tab --------------------------------------------------------------------------


# The range of each numeric setting, as validate_setting enforces it.
def _bounds(key: str) -> dict[str, int]:
    """The range the setting's own check enforces (SettingSpec.bounds), for the browser."""
    bounds = SPECS[key].bounds
    if bounds is None:
        return {}
    low, high = bounds
    return {"min": low, "max": high}


class SystemSettingsForm(forms.Form):
    """The settings of ``gpuconfig.system_settings.SPECS``, checked by ``validate_setting``."""

    default_strategy = forms.ChoiceField(
        label=SPECS[STRATEGY_KEY].label,
        help_text="The strategy GPU Configuration starts with until a configuration is saved; "
        "after that, the saved configuration's strategy is the one in force.",
        # No "Recommended" mark here: GPU Configuration computes it for the hardware at hand.
        choices=[(s.value, STRATEGY_LABELS[s]) for s in StrategyName],
    )
    # The inputs carry the bounds validate_setting enforces (one range per setting, on its
    # spec), so browsers offer the right range; the server still checks and explains.
    vram_reserve_mb = forms.IntegerField(
        label=SPECS[RESERVE_KEY].label,
        help_text=SPECS[RESERVE_KEY].help,
        widget=forms.NumberInput(attrs=_bounds(RESERVE_KEY)),
    )
    status_poll_seconds = forms.IntegerField(
        label=SPECS[STATUS_POLL_KEY].label,
        help_text=SPECS[STATUS_POLL_KEY].help,
        widget=forms.NumberInput(attrs=_bounds(STATUS_POLL_KEY)),
    )
    gpu_poll_seconds = forms.IntegerField(
        label=SPECS[GPU_POLL_KEY].label,
        help_text=SPECS[GPU_POLL_KEY].help,
        widget=forms.NumberInput(attrs=_bounds(GPU_POLL_KEY)),
    )

    def __init__(self, *args: Any, strategy_saved: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if strategy_saved:
            # After the first save the saved configuration's strategy is in force: the page
            # says which, and this second place to change it is gone.
            del self.fields["default_strategy"]

    # form field -> (setting key, stored shape of the cleaned value)
    KEYS: dict[str, str] = {
        "default_strategy": STRATEGY_KEY,
        "vram_reserve_mb": RESERVE_KEY,
        "status_poll_seconds": STATUS_POLL_KEY,
        "gpu_poll_seconds": GPU_POLL_KEY,
    }

    @classmethod
    def initial_from(cls, config: SystemConfig) -> dict[str, Any]:
        return {
            "default_strategy": config.default_strategy.value,
            "vram_reserve_mb": config.vram_reserve_mb,
            "status_poll_seconds": config.status_poll_seconds,
            "gpu_poll_seconds": config.gpu_poll_seconds,
        }

    @staticmethod
    def _stored(field: str, value: Any) -> Any:
        return {"default": value} if field == "default_strategy" else value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for field, key in self.KEYS.items():
            if field not in cleaned:
                continue  # already refused by the field itself
            try:
                validate_setting(key, self._stored(field, cleaned[field]))
            except SettingError as exc:
                # "VRAM reserve (MiB): must be between 0 and 65536 MiB, got -1": the label is
                # printed beside the field already.
                self.add_error(field, str(exc).removeprefix(f"{SPECS[key].label}: "))
        return cleaned

    def setting_values(self) -> dict[str, Any]:
        """The cleaned values keyed by setting, in their stored shape."""
        return {
            key: self._stored(field, self.cleaned_data[field])
            for field, key in self.KEYS.items()
            if field in self.fields
        }
