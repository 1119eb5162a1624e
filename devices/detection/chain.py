"""The fallback chain: which source answers :func:`detect`.

A configured simulated file is the only source. Otherwise the sources in :data:`SOURCES`
are tried in order: one that is *unavailable* here (no library, no binary: it raises a
:class:`SourceUnavailable`) hands over to the next; one that is present but *broken*
(garbage output, a GPU that fell off the bus) raises :class:`DetectionError`, which
propagates, so the caller keeps the last good inventory instead of replacing it with an
empty one. When every source is unavailable the answer is an empty inventory that says why.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Final, Protocol

from devices.detection.nvidia_smi import detect_nvidia_smi
from devices.detection.nvml import detect_nvml
from devices.detection.simulated import detect_simulated
from devices.detection.types import Detection, DetectionSource, SourceUnavailable


class GpuSource(Protocol):
    """A source of the chain: a module's ``detect_<source>`` function.

    It returns its :class:`Detection` (``processes`` filled when asked for and it can),
    raises its :class:`SourceUnavailable` subclass when it cannot be used on this host, and
    :class:`DetectionError` when it can but its answer is not to be trusted.
    """

    def __call__(self, *, with_processes: bool) -> Detection: ...


# In the order they are tried. A new source is a module beside these and a line here (plus
# the DetectionSource member its answers carry).
SOURCES: Final[tuple[GpuSource, ...]] = (
    detect_nvml,  # the driver's own library: fast and precise
    detect_nvidia_smi,  # for hosts where libnvidia-ml.so.1 cannot be loaded
)


def detect(simulated_path: Path | None = None, *, with_processes: bool = False) -> Detection:
    """Detect this host's GPUs from the best available source.

    With ``simulated_path`` the file is the only source (its errors propagate as
    :class:`DetectionError`: a demo configured with a broken file should say so, not
    silently show real or no hardware). Otherwise NVML, then nvidia-smi when NVML is
    unavailable, then an empty inventory with a message saying why. A source that is
    present but fails raises :class:`DetectionError`, so the caller keeps the last good
    inventory.

    ``with_processes`` also lists the processes holding GPU memory (NVML in the same
    session, or ``nvidia-smi --query-compute-apps``). A simulated inventory has none to
    list: ``processes`` stays None (not measured). A failed process query never fails the
    detection; it leaves ``processes`` None and says why in ``process_note``.
    """
    if simulated_path is not None:
        return detect_simulated(simulated_path)

    reasons: list[str] = []
    for source in SOURCES:
        try:
            found = source(with_processes=with_processes)
        except SourceUnavailable as unavailable:
            reasons.append(unavailable.reason)
            continue
        if reasons:
            return replace(found, message=f"Read through {found.source} because {_and(reasons)}.")
        return found
    return Detection(DetectionSource.NONE, (), message=f"No GPUs detected: {_and(reasons)}")


def _and(phrases: list[str]) -> str:
    """Join phrases as a sentence does: "a", "a and b", "a, b and c"."""
    if len(phrases) <= 1:
        return "".join(phrases)
    return f"{', '.join(phrases[:-1])} and {phrases[-1]}"
