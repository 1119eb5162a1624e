"""The system settings the app uses, their defaults and their validation.

Stored as rows of ``system_settings`` (key, JSON value). The admin and the System tab both go
through ``validate_setting`` so a bad value is refused with a sentence, never stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.documents import quoted
from gpuconfig.domain import RECOMMENDED_STRATEGY, StrategyName

logger = logging.getLogger(__name__)

STRATEGY_KEY = "gpu_assignment_strategy"
RESERVE_KEY = "vram_reserve_mb"
STATUS_POLL_KEY = "status_poll_seconds"
GPU_POLL_KEY = "gpu_poll_seconds"
TOLERANCE_KEY = "disruption_tolerance_percent"


class SettingError(ValueError):
    pass


@dataclass(frozen=True)
class IntRange:
    """A whole-number setting's check, and the range forms offer (stated once, here)."""

    low: int
    high: int
    unit: str

    def __call__(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingError(f"must be a whole number of {self.unit}, got {quoted(value)}")
        if not self.low <= value <= self.high:
            raise SettingError(
                f"must be between {self.low} and {self.high} {self.unit}, got {value}"
            )
        return value


def _int_in(low: int, high: int, unit: str) -> IntRange:
    return IntRange(low, high, unit)


def _strategy(value: Any) -> dict[str, str]:
    # The design's shape: {"default": "vram_based"}.
    if not isinstance(value, dict) or set(value) != {"default"}:
        raise SettingError('must look like {"default": "vram_based"}')
    try:
        return {"default": StrategyName(value["default"]).value}
    except ValueError:
        names = ", ".join(s.value for s in StrategyName)
        raise SettingError(
            f"unknown strategy {quoted(value['default'])} (one of {names})"
        ) from None


@dataclass(frozen=True)
class SettingSpec:
    key: str
    label: str
    help: str
    default: Any
    check: Callable[[Any], Any]

    @property
    def bounds(self) -> tuple[int, int] | None:
        """The range a whole-number setting's check enforces, for forms to offer."""
        if isinstance(self.check, IntRange):
            return self.check.low, self.check.high
        return None


SPECS: dict[str, SettingSpec] = {
    spec.key: spec
    for spec in (
        SettingSpec(
            STRATEGY_KEY,
            "Default strategy",
            "The strategy in force; saving a configuration updates it.",
            {"default": RECOMMENDED_STRATEGY.value},
            _strategy,
        ),
        SettingSpec(
            RESERVE_KEY,
            "VRAM reserve (MiB)",
            "Kept free on every GPU when budgets are auto-adjusted.",
            512,
            _int_in(0, 65536, "MiB"),
        ),
        SettingSpec(
            STATUS_POLL_KEY,
            "Apply status polling (seconds)",
            "How often the page asks for progress while an apply runs.",
            1,
            _int_in(1, 60, "seconds"),
        ),
        SettingSpec(
            GPU_POLL_KEY,
            "GPU card refresh (seconds)",
            "How often the GPU cards refresh their readings.",
            3,
            _int_in(1, 300, "seconds"),
        ),
        SettingSpec(
            TOLERANCE_KEY,
            "Balanced tolerance for fewer restarts (%)",
            "Balanced keeps running services where they are when the highest GPU "
            "utilization stays within this share of the optimum (0: always the optimum).",
            2,
            _int_in(0, 50, "percent"),
        ),
    )
}


def validate_setting(key: str, value: Any) -> Any:
    """The cleaned value, or SettingError naming the setting and the problem."""
    spec = SPECS.get(key)
    if spec is None:
        raise SettingError(f"unknown setting {quoted(key)} (known: {', '.join(sorted(SPECS))})")
    try:
        return spec.check(value)
    except SettingError as exc:
        raise SettingError(f"{spec.label}: {exc}") from None


@dataclass(frozen=True)
class SystemConfig:
    default_strategy: StrategyName
    vram_reserve_mb: int
    status_poll_seconds: int
    gpu_poll_seconds: int
    disruption_tolerance_percent: int = 2


def system_config_from_rows(rows: dict[str, Any]) -> SystemConfig:
    """Typed settings from stored rows; a bad stored value falls back to its default, loudly."""
    values: dict[str, Any] = {}
    for key, spec in SPECS.items():
        if key in rows:
            try:
                values[key] = spec.check(rows[key])
                continue
            except SettingError as exc:
                logger.warning("system setting %s ignored, using the default: %s", key, exc)
        values[key] = spec.default
    return SystemConfig(
        default_strategy=StrategyName(values[STRATEGY_KEY]["default"]),
        vram_reserve_mb=values[RESERVE_KEY],
        status_poll_seconds=values[STATUS_POLL_KEY],
        gpu_poll_seconds=values[GPU_POLL_KEY],
        disruption_tolerance_percent=values[TOLERANCE_KEY],
    )
