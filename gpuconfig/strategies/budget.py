"""The work one `plan()` call may do, counted in search nodes so that equal inputs always
give equal plans; the clock is only a safety net."""

from __future__ import annotations

import time

# The planner's default time budget (setting GPUCONFIG_PLANNER_TIME_BUDGET_MS).
DEFAULT_TIME_BUDGET_MS = 250
# The budget is spent in search nodes, not read off the clock, so that a plan does not
# depend on how busy the machine is. Calibrated on a slow shared 2-core machine
# (bench/bench_strategies.py): one node of the packing search costs 5-20 us there,
# depending on the instance and the load, so this many nodes per millisecond keeps the
# worst case inside the budget.
_NODES_PER_MS = 40
# The clock only guards against a machine far slower than that: past this share of the
# budget the search stops anyway (then, and only then, the plan may depend on timing).
_DEADLINE_FACTOR = 0.9
# Nodes the rule strategies' search in their own order of preference may take before the


class BudgetExhausted(Exception):
    """A search used up its budget."""


class Budget:
    """The work one `plan()` call may do: search nodes, plus a clock as a safety net."""

    def __init__(self, time_budget_ms: int) -> None:
        self.nodes_left = max(1, time_budget_ms) * _NODES_PER_MS
        self.total = self.nodes_left
        self.deadline = time.perf_counter() + max(1, time_budget_ms) * _DEADLINE_FACTOR / 1000

    def spend(self) -> None:
        """Count one node; raise `BudgetExhausted` when the budget is spent."""
        self.nodes_left -= 1
        if self.nodes_left < 0 or (
            self.nodes_left & 1023 == 0 and time.perf_counter() > self.deadline
        ):
            self.nodes_left = -1
            raise BudgetExhausted


class Cap:
    """A sub-budget: at most `nodes` of the parent's nodes."""

    def __init__(self, parent: Budget, nodes: int) -> None:
        self.parent = parent
        self.nodes_left = nodes

    def spend(self) -> None:
        """Count one node against both this cap and the parent budget."""
        self.nodes_left -= 1
        if self.nodes_left < 0:
            raise BudgetExhausted
        self.parent.spend()
