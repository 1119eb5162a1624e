"""What every automatic strategy plans over: the present GPUs with their pinned load, and
the services to place as items with their demand and their least (`need_of`); the input
checks that refuse what no strategy can honour."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpuconfig.domain import (
    Gpu,
    Service,
    ServiceRequest,
    adjustable,
    defined_on,
    demand_mb,
    gpu_label,
    least_demand_mb,
)


class StrategyError(ValueError):
    """The strategy cannot produce a plan for this input (the message says why)."""


@dataclass(frozen=True)
class Item:
    """A service the strategy places: its demand and the GPUs it may go to.

    `tiers` maps GPU position -> preference tier (0 = preferred); its keys are the only GPUs
    the item may go to (every strategy, balanced too, keeps it off the others: a GPU of a
    host that does not define the service is never among them). A strategy's rule picks,
    among the GPUs of the best tier where the service fits, the one with the most free MB.
    `need` is the least it can run with (`need_of`): below `demand` for a service whose
    budget the validator may shrink.
    """

    name: str
    demand: int
    tiers: dict[int, int]
    need: int
    # The hosts that define the service (`domain.Service.hosts`), for the reasons given.
    hosts: frozenset[str] | None = None


@dataclass(frozen=True)
class Inventory:
    """Present GPUs by position (sorted by index) and the load pinned services put on them."""

    gpus: tuple[Gpu, ...]
    caps: tuple[int, ...]
    fixed: tuple[int, ...]
    # The pinned load with adjustable budgets at their least (`need_of`), and the reserve
    # the validator keeps free beside an adjustable budget.
    fixed_need: tuple[int, ...] = ()
    reserve_mb: int = 0

    def item(self, request: ServiceRequest, tiers: dict[int, int]) -> Item:
        """The request as an item with these tiers."""
        need = need_of(request, self.reserve_mb)
        return Item(
            request.service.name,
            max(demand_mb(request), need),
            tiers,
            need,
            request.service.hosts,
        )

    @property
    def positions(self) -> range:
        """All GPU positions."""
        return range(len(self.gpus))

    def open_to(self, service: Service) -> list[int]:
        """The positions of the GPUs the service may run on: those of the hosts that define
        it (`domain.defined_on`); every position when it names no hosts."""
        if service.hosts is None:
            return list(self.positions)
        return [p for p, gpu in enumerate(self.gpus) if defined_on(service, gpu)]

    def constrained(self, items: Sequence[Item]) -> bool:
        """Whether some item may not go to some GPU (`Item.tiers` short of every position)."""
        count = len(self.gpus)
        return any(len(item.tiers) < count for item in items)


def check_requests(requests: Sequence[ServiceRequest]) -> list[ServiceRequest]:
    """Reject ambiguous requests; return the enabled ones in order."""
    seen: set[str] = set()
    for request in requests:
        name = request.service.name
        if name in seen:
            raise StrategyError(f"Service {name} is listed twice")
        seen.add(name)
    enabled = [r for r in requests if r.enabled]
    for request in enabled:
        # The types say int, but a service read from elsewhere (an old saved row, a
        # hand-built request) may lack the figure; say so instead of a TypeError below.
        demand: object = demand_mb(request)
        if not isinstance(demand, int) or isinstance(demand, bool):
            raise StrategyError(
                f"{request.service.name} has no VRAM figure: set its estimate in MiB "
                "(label gpuconfig.vram_estimate_mb) or a budget"
            )
        if demand < 0:
            raise StrategyError(f"{request.service.name} has a negative VRAM demand")
    return enabled


def check_gpus(gpus: Sequence[Gpu]) -> list[Gpu]:
    """Present GPUs sorted by index; reject duplicate indexes and empty cards."""
    present = sorted((g for g in gpus if g.present), key=lambda g: g.index)
    for previous, gpu in itertools.pairwise(present):
        if previous.index == gpu.index:
            raise StrategyError(f"GPU index {gpu.index} is reported twice")
    for gpu in present:
        if gpu.vram_total_mb <= 0:
            raise StrategyError(f"{gpu_label(gpu.index, gpu.host)} reports no VRAM")
    return present


def need_of(request: ServiceRequest, reserve_mb: int) -> int:
    """The least VRAM a service takes on a GPU, for the question whether a fit exists.

    A service with an adjustable budget (`domain.adjustable`) needs only its minimum
    (`domain.least_demand_mb`) plus the reserve the validator keeps free beside such a
    budget (counted per service: two of them on one GPU are counted one reserve too
    high, which can only make the planner cautious); any other service its demand.
    """
    if adjustable(request):
        return least_demand_mb(request) + max(0, reserve_mb)
    return demand_mb(request)


def by_size(requests: Iterable[ServiceRequest]) -> list[ServiceRequest]:
    """Largest demand first; equal demands keep request order (the sort is stable)."""
    return sorted(requests, key=lambda r: -demand_mb(r))


def is_flexible(inventory: Inventory, items: Sequence[Item]) -> bool:
    """Whether some service could take less than its demand (an adjustable budget)."""
    return inventory.fixed_need != inventory.fixed or any(i.need != i.demand for i in items)


def shrinkable(items: Sequence[Item]) -> str:
    """The names of the placed services whose budgets may shrink, for the notes."""
    return ", ".join(item.name for item in items if item.need < item.demand)
