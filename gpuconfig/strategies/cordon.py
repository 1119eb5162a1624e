"""GPUs in maintenance (cordoned) in every plan: pure, around the planner.

A cordoned GPU (``Gpu.cordoned``) takes no new services: every strategy plans as if it were
not there. The services that run on it now (``current``) stay on it, held there like a pin,
until the operator drains it: ``drain`` names the GPUs whose services are to be moved
elsewhere, and the planner places them with the least disruption it offers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from gpuconfig.domain import (
    Gpu,
    Plan,
    PlanWarning,
    ServiceRequest,
    StrategyName,
    WarningCode,
    gpu_labels,
)
from gpuconfig.strategies import planner
from gpuconfig.strategies.inventory import StrategyError

# Told (strategy, seconds) after each plan: the metrics register a recorder
# (orchestration.metrics); the planner itself stays free of I/O.
PLAN_TIMERS: list[Callable[[str, float], None]] = []


def _timed(strategy: StrategyName | str, started: float) -> None:
    elapsed = time.perf_counter() - started
    for timer in PLAN_TIMERS:
        timer(str(strategy), elapsed)


def cordoned_indexes(gpus: Sequence[Gpu]) -> frozenset[int]:
    """The present GPUs in maintenance."""
    return frozenset(g.index for g in gpus if g.cordoned and g.present)


def plan(
    strategy: StrategyName | str,
    gpus: Sequence[Gpu],
    requests: Sequence[ServiceRequest],
    *,
    reserve_mb: int,
    current: Mapping[str, int] | None = None,
    drain: Collection[int] = (),
    **options: Any,
) -> Plan:
    """`planner.plan` with the cordoned GPUs closed to new services (see the module).

    Without a cordoned GPU it is `planner.plan` itself, argument for argument.
    """
    started = time.perf_counter()
    try:
        return _plan(
            strategy, gpus, requests, reserve_mb=reserve_mb, current=current, drain=drain, **options
        )
    finally:
        _timed(strategy, started)


def _plan(
    strategy: StrategyName | str,
    gpus: Sequence[Gpu],
    requests: Sequence[ServiceRequest],
    *,
    reserve_mb: int,
    current: Mapping[str, int] | None,
    drain: Collection[int],
    **options: Any,
) -> Plan:
    if current is not None:
        options["current"] = current
    cordoned = cordoned_indexes(gpus)
    drain = {*drain, *(g.index for g in gpus if g.draining)}
    if not cordoned or StrategyName(strategy) is StrategyName.MANUAL:
        # Manual places nothing itself: a pin onto a cordoned GPU is the user's, warned
        # about (`maintenance_warnings`) and refused on Apply.
        return planner.plan(strategy, gpus, requests, reserve_mb=reserve_mb, **options)
    kept = {
        name: index
        for name, index in (current or {}).items()
        if index in cordoned and index not in drain
    }
    open_gpus = [g for g in gpus if g.present and g.index not in cordoned]
    movable = [
        r.service.name
        for r in requests
        if r.enabled and r.pinned_gpu is None and r.service.name not in kept
    ]
    if movable and not open_gpus:
        raise StrategyError(
            f"Every GPU is in maintenance: cannot place {', '.join(movable)}; take a GPU "
            "out of maintenance"
        )
    result = planner.plan(
        strategy,
        tuple(replace(g, present=False) if g.index in cordoned else g for g in gpus),
        tuple(
            replace(r, pinned_gpu=kept[r.service.name])
            if r.enabled and r.pinned_gpu is None and r.service.name in kept
            else r
            for r in requests
        ),
        reserve_mb=reserve_mb,
        **options,
    )
    labels = gpu_labels(gpus)
    notes = tuple(
        f"{labels[index]} is in maintenance: it takes no new services"
        + ("; the services on it are moved (drain)" if index in drain else "")
        for index in sorted(cordoned)
    )
    return replace(result, notes=(*result.notes, *notes))


def maintenance_warnings(
    gpus: Sequence[Gpu],
    requests: Sequence[ServiceRequest],
    assignments: Mapping[str, int],
    applied: Mapping[str, int] | None,
) -> list[PlanWarning]:
    """A pin onto a cordoned GPU: refused on Apply unless the service runs there now (then
    it stays until the GPU is drained, and a drain cannot move it while it is pinned).

    Services the plan holds on a cordoned GPU without a pin are the ones running there: no
    warning (`plan` keeps them until the drain)."""
    cordoned = cordoned_indexes(gpus)
    draining = {g.index for g in gpus if g.draining}
    labels = gpu_labels(gpus)
    warnings = []
    unavailable = {g.index: g.unavailable for g in gpus if g.unavailable}
    for request in requests:
        name = request.service.name
        index = assignments.get(name)
        if request.enabled and index in unavailable:
            # Its host, not the GPU, is out: said as such, whether pinned or held there.
            warnings.append(
                PlanWarning(
                    WarningCode.HOST_UNAVAILABLE,
                    f"{name} is on {labels[index]}, but {unavailable[index]}: it stays there, "
                    "and Apply cannot change that host until its agent is back",
                    name,
                    index,
                )
            )
            continue
        if not request.enabled or index not in cordoned or request.pinned_gpu != index:
            continue
        if (applied or {}).get(name) != index:
            message = (
                f"{name} is pinned to {labels[index]}, which is in maintenance: it takes no new "
                "services, and Apply refuses this pin"
            )
        elif index in draining:
            message = (
                f"{name} stays on {labels[index]}, which is being drained: it is pinned there; "
                "pin it to another GPU"
            )
        else:
            continue  # it runs there now: it stays until the GPU is drained
        warnings.append(PlanWarning(WarningCode.GPU_IN_MAINTENANCE, message, name, index))
    return warnings
