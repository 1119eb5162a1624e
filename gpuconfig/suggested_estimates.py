"""Suggested estimates: what to put in each service's ``gpuconfig.vram_estimate_mb`` label,
from the peak the sampler measured (``devices.models.ServiceVramPeak``) and the current use.

Read by ``manage.py suggest_estimates`` and ``GET /api/system/gpus/suggested-estimates``.
GPU Config never edits the compose file: the operator copies the label line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from devices.models import ServiceVramPeak
from devices.services import Sample, gpu_sample, held_mb_by_service
from gpuconfig.measured import managed_estimates

# Suggested estimates are the measured peak rounded up to this many MB: a label of
# "8900" reads as a decision, "8802" as noise that the next run will beat.
SUGGESTION_STEP_MB = 100


@dataclass(frozen=True)
class SuggestedEstimate:
    """What to put in a service's ``gpuconfig.vram_estimate_mb`` label, from its measured peak."""

    service: str
    estimate_mb: int | None
    peak_mb: int | None
    measured_now_mb: int | None
    suggested_mb: int | None

    @property
    def label_line(self) -> str:
        if self.suggested_mb is None:
            return ""
        return f'gpuconfig.vram_estimate_mb: "{self.suggested_mb}"'

    @property
    def changes_estimate(self) -> bool:
        return self.suggested_mb is not None and self.suggested_mb != self.estimate_mb

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "estimate_mb": self.estimate_mb,
            "peak_mb": self.peak_mb,
            "measured_now_mb": self.measured_now_mb,
            "suggested_mb": self.suggested_mb,
            "label_line": self.label_line,
            "changes_estimate": self.changes_estimate,
        }


def suggest(peak_mb: int | None) -> int | None:
    """The measured peak rounded up to a whole :data:`SUGGESTION_STEP_MB` (None: never measured)."""
    if peak_mb is None:
        return None
    return max(SUGGESTION_STEP_MB, math.ceil(peak_mb / SUGGESTION_STEP_MB) * SUGGESTION_STEP_MB)


def suggested_estimates(sample: Sample | None = None) -> list[SuggestedEstimate]:
    """Per managed service: its estimate, measured peak and current use, and the label to write.

    The peak is the highest total the sampler has stored (it samples while the page or the
    API is read); the current sample counts too, so a first call already suggests something.
    """
    sample = sample or gpu_sample()
    estimates = managed_estimates()
    stored = dict(ServiceVramPeak.objects.values_list("service", "peak_mb"))
    now: dict[str, int] = {}
    if sample.processes is not None:
        for name, per_gpu in held_mb_by_service(
            sample.processes, settings.GPUCONFIG_COMPOSE_PROJECT
        ).items():
            now[name] = sum(per_gpu.values())
    out = []
    for name, estimate in estimates.items():
        candidates = [v for v in (stored.get(name), now.get(name)) if v is not None]
        peak = max(candidates) if candidates else None
        out.append(
            SuggestedEstimate(
                service=name,
                estimate_mb=estimate,
                peak_mb=peak,
                measured_now_mb=now.get(name) if sample.processes is not None else None,
                suggested_mb=suggest(peak),
            )
        )
    return out
