"""The five assignment strategies: which GPU each enabled service goes to.

Pure functions over the dataclasses of `gpuconfig.domain`: no Django, no I/O.

Shared rules for the automatic strategies (everything but manual):

* Only present GPUs are candidates; disabled services are left out entirely.
* A pinned service stays on its pin (even a GPU that is not detected: the validator
  reports that) and its demand counts as fixed load on that GPU.
* Capacity is a GPU's total VRAM; a service's demand is `domain.demand_mb`.
* Never over capacity when a placement within capacity exists: when a strategy's rule
  overloads a GPU, a search looks for the nearest placement, in the rule's own order of
  preference, that fits (and, if that search runs out of time, for any placement that
  fits). When none fits the rule's placement is kept and the fewest services that do not
  fit are listed in `Plan.over_capacity`: every service still gets a GPU.
* A service with an adjustable budget (`domain.adjustable`) fits where its minimum
  (`domain.least_demand_mb`) plus the validator's reserve fits (`inventory.need`). The rule's
  order and balanced's utilization see its full estimate; a fit at full estimates is
  preferred, then one with such budgets shrunk, never below their minimum.
* The work is bounded by a time budget (`time_budget_ms`), counted in search steps so
  that equal inputs always give equal plans.

The strategies:

* manual: every enabled service must be pinned; nothing moves.
* vram_based (the design's rule): largest demand first, each onto the GPU with the most
  free MiB. This evens out free megabytes, not utilization: a 4 GiB card with 1 GiB free
  looks fuller than an 80 GiB card with 2 GiB free. Balanced evens utilization instead.
* latency_optimized: "llm" and "critical" services on the fastest GPU (`fastest_gpu`);
  the rest by the vram_based rule on the other GPUs, falling back to the fastest one when
  they fit nowhere else or there is no other GPU.
* isolation_first: "llm" services alone on the largest GPU (`largest_gpu`); the rest by
  the vram_based rule on the GPUs no LLM is on. With one GPU everything shares it.
* balanced: the proven least highest utilization when the budget allows, else the best
  plan found with a proven bound (`Plan.optimality`); then as even as possible. When
  nothing fits, the least harm (`balanced`).

Where things are:

* `cordon`: `plan()` as callers get it: GPUs in maintenance closed to new services, the
  services on them held there until drained; `maintenance_warnings` for pins onto them.
* `planner`: `plan()`, the one entry point: checks the input, builds the inventory of
  present GPUs and pinned load, and hands it to the strategy.
* `inventory`: what every strategy plans over (`Inventory`, `Item`), the least a service
  needs (`need_of`), and the input checks (`StrategyError`).
* `rules`: vram_based, latency_optimized and isolation_first: the GPU ranking
  (`fastest_gpu`, `largest_gpu`), each strategy's items, the greedy rule and its repair.
* `balanced`: the proven-optimal balanced optimizer and its local search.
* `harm`: when not everything fits: which services are listed, the least harm.
* `packing`: the bin-packing search both kinds use to find a fit or prove there is none.
* `budget`: the search budget, counted in nodes.
"""

from gpuconfig.strategies.budget import DEFAULT_TIME_BUDGET_MS

# Every caller plans through the cordon: a GPU in maintenance takes no new services.
from gpuconfig.strategies.cordon import plan
from gpuconfig.strategies.inventory import StrategyError
from gpuconfig.strategies.rules import fastest_gpu, largest_gpu

__all__ = [
    "DEFAULT_TIME_BUDGET_MS",
    "StrategyError",
    "fastest_gpu",
    "largest_gpu",
    "plan",
]
