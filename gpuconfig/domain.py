"""Plain data shared by the planner, the validator and the rest of the app.

Nothing here imports Django or touches the database, the clock or the filesystem, so
the planning core can be tested and benchmarked on its own.

Units: VRAM is counted in MiB, as the driver reports it (nvidia-smi's "24564MiB"); the
``_mb`` in field and label names means MiB. People read GiB (`format_vram`: 24564 MiB is
"24.0 GiB"), and a VRAM budget (``VRAM_BUDGET_GB``) is a number of GiB: 1 = 1024 MiB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from fractions import Fraction
from functools import cached_property
from typing import Any, Literal

# MiB in a GiB: what the page shows and the unit of a VRAM budget (``VRAM_BUDGET_GB``).
MIB_PER_GIB = 1024

Role = Literal["llm", "critical", "standard"]

# What a service runs on (its ``gpuconfig.accelerator`` label) and the GPU vendor each one
# needs; "any" runs on every GPU. The default keeps compose files written before AMD
# support meaning what they meant: CUDA, NVIDIA GPUs only.
Accelerator = Literal["cuda", "rocm", "any"]
ACCELERATORS: tuple[Accelerator, ...] = ("cuda", "rocm", "any")
DEFAULT_ACCELERATOR: Accelerator = "cuda"
ACCELERATOR_VENDOR: dict[str, str] = {"cuda": "nvidia", "rocm": "amd"}
VENDOR_LABELS: dict[str, str] = {"nvidia": "NVIDIA", "amd": "AMD"}
ACCELERATOR_LABELS: dict[str, str] = {"cuda": "CUDA", "rocm": "ROCm", "any": "any GPU"}


def runs_on(accelerator: str, vendor: str) -> bool:
    """Whether a service of this accelerator can run on a GPU of this vendor."""
    needed = ACCELERATOR_VENDOR.get(accelerator)
    return needed is None or needed == vendor


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
    vendor: str = "nvidia"  # "nvidia" or "amd" (devices.detection.GpuVendor)
    # The vendor's own index (the container device name's); None: the same as ``index``.
    device_index: int | None = None
    render_node: str = ""  # AMD: /dev/dri/renderD<N>, read from sysfs
    # In maintenance (devices.maintenance): no new services in any plan; the ones on it stay
    # until it is drained (gpuconfig.strategies.cordon).
    cordoned: bool = False
    # Several hosts: why its host takes nothing now ("host gpu-box-2 is offline since ...");
    # "" when it is online. Such a GPU is cordoned too.
    unavailable: str = ""
    draining: bool = False  # cordoned and drained: the services on it move elsewhere too
    # The GPU host it is on, by name; "": the local host (or a host not named). Its index is
    # global: host number x 100 + its index on the host.
    host: str = ""


# A GPU's global index is its host's number x this + its index on that host: the local host
# (number 0) has 0..99. The same stride as devices.models.HOST_INDEX_STRIDE (this module
# imports no Django).
HOST_INDEX_STRIDE = 100


def gpu_label(index: int, host: str = "") -> str:
    """A GPU as sentences name it: "GPU 3" on the local host, "gpu-box-2 / GPU 1" for GPU 101
    on host gpu-box-2, as its operator knows it there.

    With no host name (one host, or a caller that does not know it) even an index of 100 or
    more stays "GPU 101": a host is never guessed.
    """
    if index < HOST_INDEX_STRIDE or not host:
        return f"GPU {index}"
    return f"{host} / GPU {index % HOST_INDEX_STRIDE}"


def gpu_labels(gpus: Iterable[Gpu]) -> dict[int, str]:
    """Index -> `gpu_label` for every GPU given, built once for a batch of sentences."""
    return {gpu.index: gpu_label(gpu.index, gpu.host) for gpu in gpus}


@dataclass(frozen=True)
class Service:
    """An AI service (container) and the VRAM its model needs.

    `budget_env` names the environment variable (e.g. ``VRAM_BUDGET_GB``) through which
    the service accepts a VRAM budget; such a service can be shrunk to fit a GPU, down to
    `vram_min_mb` (its ``gpuconfig.vram_min_mb`` label), or `MIN_BUDGET_FLOOR_MB` without
    one (see `least_budget_mb`).
    """

    name: str
    model: str
    vram_estimate_mb: int
    role: Role = "standard"
    budget_env: str | None = None
    vram_min_mb: int | None = None
    accelerator: Accelerator = DEFAULT_ACCELERATOR  # its gpuconfig.accelerator label
    # Seconds a restart takes it out of service (its gpuconfig.restart_cost label); None:
    # `restart_cost_ms` stands in with its VRAM estimate.
    restart_cost_s: float | None = None
    # The GPU hosts whose compose file defines the service: it can run only on their GPUs.
    # None: no such constraint (one host, or not known).
    hosts: frozenset[str] | None = None


def defined_on(service: Service, gpu: Gpu) -> bool:
    """Whether the service may run on this GPU: its host defines the service."""
    return service.hosts is None or gpu.host in service.hosts


def restart_cost_ms(service: Service) -> int:
    """What moving the service costs, in milliseconds out of service.

    Its ``gpuconfig.restart_cost`` label when it states one; otherwise its VRAM estimate read
    as loading at 1 GiB/s (1 MiB = 1 ms): loading the model is what a restart mostly waits for.
    """
    if service.restart_cost_s is not None:
        return round(service.restart_cost_s * 1000)
    return service.vram_estimate_mb


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
    A service whose budget can be adjusted counts at its minimum (`least_demand_mb`, plus
    the reserve): one that fits once its budget shrinks is not listed.
    """

    assignments: dict[str, int]
    over_capacity: tuple[str, ...]
    notes: tuple[str, ...] = ()
    optimality: Optimality | None = None  # balanced only: how close to the optimum it is
    # How many running services the plan moves, beside the full re-plan's; None when the
    # planner was not told where the services run now.
    disruption: Disruption | None = None


@dataclass(frozen=True)
class Disruption:
    """The plan's moves of running services beside those of the full re-plan.

    `moved`: services the plan takes off the GPU they run on now, each with the reason
    (`reasons`, same order); `scratch_moved`: those the re-plan from scratch would move.
    Utilizations are the highest load / capacity of each plan (None: not everything
    fits). `tolerance` is balanced's allowance over its optimum (0 for other strategies);
    `from_scratch` says which of the two plans the assignments follow.
    """

    moved: tuple[str, ...]
    reasons: tuple[str, ...]
    scratch_moved: tuple[str, ...]
    max_utilization: float | None
    scratch_max_utilization: float | None
    tolerance: float
    from_scratch: bool = False
    # Whether no plan within the tolerance moves less (False: the search ran out of budget).
    proven: bool = True

    @property
    def label(self) -> str:
        """One line: "1 move instead of 5" (of the full re-plan)."""
        least, scratch = len(self.moved), len(self.scratch_moved)
        if self.from_scratch:
            return f"re-planned from scratch: {_moves(scratch)} instead of {least}"
        if least == scratch:
            return f"{_moves(least)}, as many as a re-plan from scratch"
        return f"{_moves(least)} instead of {scratch}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "moved": [
                {"service": s, "reason": r} for s, r in zip(self.moved, self.reasons, strict=True)
            ],
            "scratch_moved": list(self.scratch_moved),
            "max_utilization": self.max_utilization,
            "scratch_max_utilization": self.scratch_max_utilization,
            "tolerance": self.tolerance,
            "from_scratch": self.from_scratch,
            "proven": self.proven,
            "label": self.label,
        }


def _moves(count: int) -> str:
    return "1 move" if count == 1 else f"{count} moves"


@dataclass(frozen=True)
class Optimality:
    """What balanced's search proved about its plan.

    `max_utilization` is the plan's highest load / capacity over the GPUs it could keep
    within capacity (the services that fit nowhere are left out of it), `lower_bound`
    a value no plan can beat with as few services that do not fit. `proven` is True when
    the search showed the plan optimal: then the two are equal.
    """

    proven: bool
    max_utilization: float
    lower_bound: float

    @property
    def gap(self) -> float | None:
        """Relative distance to the bound (0.0 when proven); None when there is no bound."""
        if self.proven:
            return 0.0
        if self.lower_bound <= 0:
            return None
        return max(0.0, self.max_utilization / self.lower_bound - 1)

    @property
    def label(self) -> str:
        """What the page shows: "optimal" or "within 0.3% of optimal"."""
        gap = self.gap
        if gap == 0.0:
            return "optimal"
        if gap is None:
            return "best plan found within the time budget (not proven optimal)"
        # Round the gap up to a tenth of a percent: the label may understate how good
        # the plan is, never overstate it.
        tenths = max(1, math.ceil(gap * 1000 - 1e-9))
        return f"within {tenths // 10}.{tenths % 10}% of optimal"

    def as_dict(self) -> dict[str, bool | float | str | None]:
        """JSON-ready form."""
        return {
            "proven": self.proven,
            "max_utilization": self.max_utilization,
            "lower_bound": self.lower_bound,
            "gap": self.gap,
            "label": self.label,
        }


class WarningCode(StrEnum):
    """Machine-readable kinds of `PlanWarning`."""

    SERVICE_EXCEEDS_GPU = "service_exceeds_gpu"
    COMBINED_EXCEEDS_GPU = "combined_exceeds_gpu"
    LLM_ON_SMALL_GPU = "llm_on_small_gpu"
    GPU_MISSING = "gpu_missing"
    EXTERNAL_VRAM_USE = "external_vram_use"
    BUDGET_ADJUSTED = "budget_adjusted"
    # An adjustable budget that would have to go below the service's minimum: it does not fit.
    BUDGET_BELOW_MINIMUM = "budget_below_minimum"
    BUDGET_OVERRIDE_TOO_LARGE = "budget_override_too_large"
    SINGLE_GPU_ISOLATION = "single_gpu_isolation"
    NOT_PLACED_WITHIN_CAPACITY = "not_placed_within_capacity"
    NO_GPUS = "no_gpus"
    # Measured VRAM (gpuconfig.measured): a service holding more than its estimate, and a planned
    # move that the target GPU's real free memory cannot hold.
    SERVICE_OVER_ESTIMATE = "service_over_estimate"
    MOVE_EXCEEDS_REAL_FREE = "move_exceeds_real_free"
    # A service assigned to a GPU of a vendor it cannot run on (gpuconfig.accelerator), and
    # one for which no GPU of its vendor is detected.
    ACCELERATOR_MISMATCH = "accelerator_mismatch"
    NO_MATCHING_GPU = "no_matching_gpu"
    # A service pinned onto a GPU in maintenance (it takes no new services; Apply refuses).
    GPU_IN_MAINTENANCE = "gpu_in_maintenance"
    # Several hosts: a service on a GPU of a host that is offline, joining or in maintenance
    # (it stays there; Apply cannot change that host until its agent is back).
    HOST_UNAVAILABLE = "host_unavailable"


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
    """One service of a resolved configuration: its GPU, its budget and the user's switches.

    The validator fills in the first four fields; the draft adds the GPU's UUID and name,
    the pin, the user's budget override, the enabled flag and the service's budget variable.
    The same value then travels unchanged to the rows, the stored version (``to_json``), the
    change list, the verification of a container and both generated files.
    """

    service: str
    gpu_index: int | None  # None: switched off, or no GPU could be chosen
    vram_budget_gb: float | None = None
    budget_auto_adjusted: bool = False
    gpu_uuid: str = ""
    gpu_name: str = ""
    pinned: bool = False
    vram_budget_override: float | None = None  # GiB the user typed; None: automatic
    enabled: bool = True
    # The variable through which the service reads its budget (its gpuconfig.budget_env
    # label); a service without one gets no budget in its environment.
    budget_env: str | None = None
    # The GPU's vendor, its own index and its render node: what the override gives the
    # container (nvidia.com/gpu=N, amd.com/gpu=N or /dev/kfd + the render node).
    gpu_vendor: str = "nvidia"
    gpu_device_index: int | None = None  # None: the same as gpu_index
    gpu_render_node: str = ""

    @property
    def placed(self) -> bool:
        """Whether the service runs on a GPU (enabled and given one)."""
        return self.enabled and self.gpu_index is not None

    @property
    def container_gpu(self) -> int | None:
        """The GPU the service's container gets: none when the service is switched off."""
        return self.gpu_index if self.enabled else None

    def change_key(self) -> tuple[int | None, float | None, bool]:
        """What decides whether a container must be recreated: GPU, budget, enabled."""
        return self.container_gpu, self.vram_budget_gb, self.enabled

    def to_json(self) -> dict[str, Any]:
        """The stored form (one entry of ``ConfigVersion.assignments``): the field names."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "service"}

    @classmethod
    def from_json(
        cls, service: str, data: Mapping[str, Any], *, budget_env: str | None = None
    ) -> ResolvedAssignment:
        """Read a stored entry, including those saved before the names were unified
        (``gpu`` and ``vram_budget``) and before the budget variable was recorded
        (``budget_env`` then comes from the caller, i.e. the service registry)."""
        return cls(
            service=service,
            gpu_index=data.get("gpu_index", data.get("gpu")),
            vram_budget_gb=data.get("vram_budget_gb", data.get("vram_budget")),
            budget_auto_adjusted=bool(data.get("budget_auto_adjusted", False)),
            gpu_uuid=data.get("gpu_uuid") or "",
            gpu_name=data.get("gpu_name") or "",
            pinned=bool(data.get("pinned", False)),
            vram_budget_override=data.get("vram_budget_override"),
            enabled=bool(data.get("enabled", True)),
            budget_env=data.get("budget_env", budget_env),
            gpu_vendor=data.get("gpu_vendor") or "nvidia",
            gpu_device_index=data.get("gpu_device_index"),
            gpu_render_node=data.get("gpu_render_node") or "",
        )


@dataclass(frozen=True)
class Configuration:
    """A resolved configuration: one :class:`ResolvedAssignment` per managed service.

    What a draft proposes, what a version stores and what an apply puts into effect are all
    this one value; the strategy is kept beside it (on the draft, the version, the rows).
    """

    assignments: tuple[ResolvedAssignment, ...]

    def __post_init__(self) -> None:
        names = [a.service for a in self.assignments]
        if len(set(names)) != len(names):
            raise ValueError(f"a service appears more than once in {names}")

    @cached_property
    def by_service(self) -> Mapping[str, ResolvedAssignment]:
        return {a.service: a for a in self.assignments}

    def get(self, service: str) -> ResolvedAssignment | None:
        return self.by_service.get(service)

    def placements(self) -> dict[str, int]:
        """Where the enabled services run: {service: GPU index}."""
        return {
            a.service: a.gpu_index
            for a in self.assignments
            if a.gpu_index is not None and a.enabled
        }

    def to_json(self) -> dict[str, dict[str, Any]]:
        """``{service: {field: value}}``, the form ``ConfigVersion.assignments`` stores."""
        return {a.service: a.to_json() for a in self.assignments}

    @classmethod
    def from_json(
        cls,
        data: Mapping[str, Mapping[str, Any]] | None,
        *,
        budget_envs: Mapping[str, str | None] | None = None,
    ) -> Configuration:
        """Read ``ConfigVersion.assignments`` (old key names too); ``budget_envs`` fills in the
        budget variable of versions stored before it was recorded."""
        envs = budget_envs or {}
        return cls(
            tuple(
                ResolvedAssignment.from_json(name, entry, budget_env=envs.get(name))
                for name, entry in (data or {}).items()
            )
        )


@dataclass(frozen=True)
class Evaluation:
    """The validator's answer: assignments with budgets, warnings, and planned MB per GPU."""

    assignments: tuple[ResolvedAssignment, ...]
    warnings: tuple[PlanWarning, ...]
    planned_vram_mb: dict[int, int]


def demand_mb(request: ServiceRequest) -> int:
    """VRAM the service will take: its budget override when set, else its estimate."""
    if request.budget_override_gb is not None:
        return budget_mib(request.budget_override_gb)
    return request.service.vram_estimate_mb


# Budgets are handed out in whole tenths of a GiB. A tenth is 102.4 MiB, not a whole
# number, so tenths and MiB are converted with integer arithmetic (never `// 10` of a
# per-GiB figure, nor float division): a budget of t tenths plans as ceil(t * 102.4) MiB,
# the least whole number of MiB that holds it, so the plan never counts less than the
# service may fill.
def tenths_mib(tenths: int) -> int:
    """MiB a budget of `tenths` tenths of a GiB holds, rounded up: 23 -> 2356, 25 -> 2560."""
    return -(-tenths * MIB_PER_GIB // 10)


def tenths_within(mib: int) -> int:
    """The most whole tenths of a GiB that fit into `mib`: 2400 -> 23 (2.3 GiB is 2356)."""
    return mib * 10 // MIB_PER_GIB


def budget_mib(gib: float) -> int:
    """MiB a budget of `gib` GiB holds, rounded up: 2.5 -> 2560, 2.3 -> 2356.

    Read through the float's shortest decimal form so that 2.3 means 23 tenths exactly
    (the binary 2.3 is a hair under it), and a budget agrees with `tenths_mib`."""
    return math.ceil(Fraction(repr(float(gib))) * MIB_PER_GIB)


# The least budget a service that takes one is given when it does not declare its own
# (``gpuconfig.vram_min_mb``). A CUDA context alone takes 300-500 MiB, and a budget-taking
# service loads at least one model besides: below about 1 GiB such a service cannot load
# anything useful (the smallest model of the reference system, YOLO, needs 650 MiB on its
# own), so a smaller budget would only look like a fit. Services that can do with less
# say so with the label.
MIN_BUDGET_FLOOR_MB = MIB_PER_GIB


def least_budget_tenths(service: Service) -> int:
    """The least budget, in tenths of a GiB, a service that takes one can work with: its
    ``vram_min_mb``, else `MIN_BUDGET_FLOOR_MB`, rounded up to whole tenths since budgets
    are handed out in tenths (a 2000 MiB minimum needs a 2.0 GiB budget, 2050 MiB 2.1)."""
    least = service.vram_min_mb
    if least is None:
        least = MIN_BUDGET_FLOOR_MB
    return -(-least * 10 // MIB_PER_GIB)


def least_budget_mb(service: Service) -> int:
    """The least budget in MiB (`least_budget_tenths`), never above the service's estimate
    (then it cannot be shrunk at all)."""
    return min(tenths_mib(least_budget_tenths(service)), service.vram_estimate_mb)


def adjustable(request: ServiceRequest) -> bool:
    """Whether the validator may size the service's budget: it takes one, has no override,
    and its least budget is below its estimate."""
    service = request.service
    return (
        bool(service.budget_env)
        and request.budget_override_gb is None
        and least_budget_mb(service) < service.vram_estimate_mb
    )


def least_demand_mb(request: ServiceRequest) -> int:
    """The least VRAM the service can run with: `demand_mb`, except that a service whose
    budget is adjustable needs only `least_budget_mb` (never more than its estimate)."""
    demand = demand_mb(request)
    if adjustable(request):
        return min(demand, least_budget_mb(request.service))
    return demand


def format_vram(mib: float, *, round_down: bool = False) -> str:
    """VRAM as people read it, the one formatter for pages, messages and files: GiB with one
    decimal (24564 -> "24.0 GiB", 4094 -> "4.0 GiB", 6963 -> "6.8 GiB"), and whole MiB
    under 1 GiB (512 -> "512 MiB").

    Halves round up, computed on exact fractions rather than f"{x:.1f}" so a figure never
    depends on how it happens to be stored in binary. `round_down` rounds towards zero
    instead, for room left on a GPU, so it agrees with the budgets cut to fit it.
    (docs/ui.md, "Units": GiB of 1024 MiB, the unit nvidia-smi, GPUStack and nvtop use.)
    """
    # A float is read through its shortest decimal form (3635.2 is 3635.2, not the binary
    # number a hair below it), so that halves round up as written.
    amount = abs(Fraction(repr(mib)) if isinstance(mib, float) else Fraction(mib))
    sign = "-" if mib < 0 else ""
    if amount < MIB_PER_GIB:
        whole = math.floor(amount) if round_down else math.floor(amount + Fraction(1, 2))
        return f"{sign if whole else ''}{whole} MiB"
    tenths = amount * 10 / MIB_PER_GIB
    tenths_int = math.floor(tenths) if round_down else math.floor(tenths + Fraction(1, 2))
    return f"{sign}{tenths_int // 10}.{tenths_int % 10} GiB"
