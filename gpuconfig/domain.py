"""Plain data shared by the planner, the validator and the rest of the app.

Nothing here imports Django or touches the database, the clock or the filesystem, so
the planning core can be tested and benchmarked on its own.

Units: VRAM is counted in MB, and 1 GB = 1000 MB everywhere (6800 MB is "6.8 GB").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

MB_PER_GB = 1000

Role = Literal["llm", "critical", "standard"]


class StrategyName(StrEnum):
    """How services are spread over the GPUs."""

    MANUAL = "manual"
    VRAM_BASED = "vram_based"
    LATENCY_OPTIMIZED = "latency_optimized"
    ISOLATION_FIRST = "isolation_first"
    BALANCED = "balanced"


STRATEGY_LABELS: dict[StrategyName, str] = {
    StrategyName.MANUAL: "Manual",
    StrategyName.VRAM_BASED: "VRAM-based",
    StrategyName.LATENCY_OPTIMIZED: "Latency-optimized",
    StrategyName.ISOLATION_FIRST: "Isolation-first",
    StrategyName.BALANCED: "Balanced",
}

STRATEGY_DESCRIPTIONS: dict[StrategyName, str] = {
    StrategyName.MANUAL: "You control each assignment",
    StrategyName.VRAM_BASED: "Largest models on largest GPU",
    StrategyName.LATENCY_OPTIMIZED: "Critical path models on fastest GPU",
    StrategyName.ISOLATION_FIRST: "LLM gets dedicated GPU",
    StrategyName.BALANCED: "Distribute VRAM evenly",
}

RECOMMENDED_STRATEGY = StrategyName.VRAM_BASED


@dataclass(frozen=True)
class Gpu:
    """One GPU as detection reports it; `present=False` keeps a GPU that disappeared."""

    index: int
    name: str
    vram_total_mb: int
    vram_used_mb: int | None = None
    compute_capability: str | None = None
    present: bool = True
    uuid: str = ""


@dataclass(frozen=True)
class Service:
    """An AI service (container) and the VRAM its model needs.

    `budget_env` names the environment variable (e.g. ``VRAM_BUDGET_GB``) through which
    the service accepts a VRAM budget; such a service can be shrunk to fit a GPU.
    """

    name: str
    model: str
    vram_estimate_mb: int
    role: Role = "standard"
    budget_env: str | None = None


@dataclass(frozen=True)
class ServiceRequest:
    """What the user asks for one service: an optional pin, on/off, a budget override."""

    service: Service
    pinned_gpu: int | None = None
    enabled: bool = True
    budget_override_gb: float | None = None


@dataclass(frozen=True)
class Plan:
    """A strategy's answer.

    `assignments` maps every enabled service to a GPU index. `over_capacity` lists the
    services the strategy itself placed (pinned ones are the user's call) that do not
    fit within their GPU's capacity: the plan still gives them a GPU ("warn but allow").
    On each GPU the pinned services are counted first, then the others largest first;
    the ones that no longer fit are the ones listed.
    """

    assignments: dict[str, int]
    over_capacity: tuple[str, ...]
    notes: tuple[str, ...] = ()


class WarningCode(StrEnum):
    """Machine-readable kinds of `PlanWarning`."""

    SERVICE_EXCEEDS_GPU = "service_exceeds_gpu"
    COMBINED_EXCEEDS_GPU = "combined_exceeds_gpu"
    LLM_ON_SMALL_GPU = "llm_on_small_gpu"
    GPU_MISSING = "gpu_missing"
    EXTERNAL_VRAM_USE = "external_vram_use"
    BUDGET_ADJUSTED = "budget_adjusted"
    BUDGET_OVERRIDE_TOO_LARGE = "budget_override_too_large"
    SINGLE_GPU_ISOLATION = "single_gpu_isolation"
    NOT_PLACED_WITHIN_CAPACITY = "not_placed_within_capacity"
    NO_GPUS = "no_gpus"


@dataclass(frozen=True)
class PlanWarning:
    """A problem with a set of assignments, shown to the user but not blocking."""

    code: WarningCode
    message: str
    service: str | None = None
    gpu_index: int | None = None

    def as_dict(self) -> dict[str, str | int | None]:
        """JSON-ready form (the code as its string value)."""
        return {
            "code": self.code.value,
            "message": self.message,
            "service": self.service,
            "gpu_index": self.gpu_index,
        }


@dataclass(frozen=True)
class ResolvedAssignment:
    """Where a service goes and the VRAM budget (GB) to pass it, if any."""

    service: str
    gpu_index: int
    vram_budget_gb: float | None
    budget_auto_adjusted: bool


@dataclass(frozen=True)
class Evaluation:
    """The validator's answer: assignments with budgets, warnings, and planned MB per GPU."""

    assignments: tuple[ResolvedAssignment, ...]
    warnings: tuple[PlanWarning, ...]
    planned_vram_mb: dict[int, int]


def demand_mb(request: ServiceRequest) -> int:
    """VRAM the service will take: its budget override when set, else its estimate."""
    if request.budget_override_gb is not None:
        return round(request.budget_override_gb * MB_PER_GB)
    return request.service.vram_estimate_mb


def format_gb(mb: float) -> str:
    """MB as GB with one decimal, rounding halves up: 6800 -> "6.8 GB", 23000 -> "23.0 GB"."""
    # Integer tenths instead of f"{x:.1f}" so that e.g. 3550 MB reliably reads "3.6 GB"
    # rather than depending on how 3.55 happens to be stored in binary.
    tenths = int((abs(mb) + 50) // 100)
    sign = "-" if mb < 0 and tenths else ""
    return f"{sign}{tenths // 10}.{tenths % 10} GB"


# A card sold as "N GB" reports a little under N * 1024 MB through the driver (NVML's
# "MB" are MiB, and the driver keeps some back): 4094 for a 4 GB card, 24564 for a 24 GB
# one, 81559 for an 80 GB one. Within this fraction of a whole N we show the N on the box.
_NOMINAL_SIZE_TOLERANCE = 0.01


def format_gpu_capacity(mb: int) -> str:
    """A GPU's total VRAM as the user knows it: 4094 -> "4 GB", 24564 -> "24 GB".

    When the size is within 1% of a whole number of 1024-MB units, that whole number is
    the card's marketed size and is what we print; any other size prints in the usual
    1000-MB GB with one decimal (16000 -> "16.0 GB"). Used for every GPU capacity in
    messages so the same card never reads as "4 GB" in one sentence and "4.1 GB" in the next.
    """
    nominal = round(mb / 1024)
    if nominal >= 1 and abs(mb / 1024 - nominal) <= _NOMINAL_SIZE_TOLERANCE * nominal:
        return f"{nominal} GB"
    return format_gb(mb)
