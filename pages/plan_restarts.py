"""What a plan restarts, for the page: the services it moves (each with why), those it places
for the first time, and the same plan beside the re-plan from scratch (issue 19).

The numbers come from the draft (``gpuconfig.drafts``): ``Draft.changes`` against the
configuration in force, and ``Plan.disruption`` for the comparison. This module only words
them; the API returns the same facts as JSON (``gpuconfig.apis._preview_body``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gpuconfig.drafts import Draft


@dataclass(frozen=True)
class MovedService:
    service: str
    why: str  # "" when the plan gave no reason


@dataclass(frozen=True)
class PlanSide:
    """One column of the comparison: how many running services move, and the fullest GPU."""

    moves: int
    utilization: str  # "82.1 %", or "does not fit" when some GPU is over capacity


@dataclass(frozen=True)
class PlanRestarts:
    restarts: list[str]  # running services whose container Apply recreates
    moved: list[MovedService]  # running services that go to another GPU, with why
    placed: list[str]  # services that get a GPU for the first time (nothing restarts)
    # The comparison, for automatic strategies once something runs (None otherwise).
    label: str = ""  # "1 move instead of 5"
    this_plan: PlanSide | None = None
    from_scratch: PlanSide | None = None
    is_from_scratch: bool = False
    # How Apply would move each restart now (orchestration: a second copy first, or a stop
    # then a start, and why): (service, sentence), empty when not asked or not known.
    how: list[tuple[str, str]] = field(default_factory=list)


def restarting(draft: Draft) -> list[str]:
    """The running services whose container Apply would recreate for ``draft``."""
    return [c.service for c in draft.changes if c.restarts]


def plan_restarts(draft: Draft, how: Mapping[str, str] | None = None) -> PlanRestarts:
    """The restarts and moves of ``draft``, and its comparison with the full re-plan.
    ``how``: by service, how Apply would move it (orchestration.selectors.planned_moves)."""
    disruption = draft.plan.disruption if draft.plan else None
    reasons = dict(zip(disruption.moved, disruption.reasons, strict=True)) if disruption else {}
    how = how or {}
    result = PlanRestarts(
        restarts=restarting(draft),
        moved=[
            MovedService(c.service, reasons.get(c.service, "")) for c in draft.changes if c.moves
        ],
        placed=[c.service for c in draft.changes if c.placed_first],
        how=[(name, how[name]) for name in restarting(draft) if name in how],
    )
    if disruption is None:
        return result
    return PlanRestarts(
        restarts=result.restarts,
        moved=result.moved,
        placed=result.placed,
        label=disruption.label,
        this_plan=PlanSide(
            moves=len(disruption.moved), utilization=_utilization(disruption.max_utilization)
        ),
        from_scratch=PlanSide(
            moves=len(disruption.scratch_moved),
            utilization=_utilization(disruption.scratch_max_utilization),
        ),
        is_from_scratch=disruption.from_scratch,
        how=result.how,
    )


def _utilization(value: float | None) -> str:
    return "does not fit" if value is None else f"{value * 100:.1f} %"
