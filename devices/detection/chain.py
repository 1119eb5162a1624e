"""The fallback chain: which sources answer :func:`detect`.

A configured simulated file is the only source. Otherwise every vendor in :data:`SOURCES`
is consulted, and each vendor's sources are tried in order: one that is *unavailable* here
(no library, no binary: it raises a :class:`SourceUnavailable`) hands over to the next;
one that is present but *broken* (garbage output, a GPU that fell off the bus) raises
:class:`DetectionError`, which propagates, so the caller keeps the last good inventory
instead of replacing it with an empty one (see :func:`detect` for one vendor's failure
beside another's GPUs). When every source is unavailable the answer is an empty
inventory that says why.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Protocol

from devices.detection.nvidia_smi import detect_nvidia_smi
from devices.detection.nvml import detect_nvml
from devices.detection.rocm import detect_rocm
from devices.detection.simulated import detect_simulated
from devices.detection.types import (
    Detection,
    DetectionError,
    DetectionSource,
    GpuReading,
    GpuVendor,
    SourceUnavailable,
)


class GpuSource(Protocol):
    """A source of the chain: a module's ``detect_<source>`` function.

    It returns its :class:`Detection` (``processes`` filled when asked for and it can),
    raises its :class:`SourceUnavailable` subclass when it cannot be used on this host, and
    :class:`DetectionError` when it can but its answer is not to be trusted.
    """

    def __call__(self, *, with_processes: bool) -> Detection: ...


@dataclass(frozen=True)
class VendorSources:
    """One vendor's sources, in the order they are tried (the first available answers)."""

    vendor: GpuVendor
    sources: tuple[GpuSource, ...]


# Every vendor is consulted: a host can hold NVIDIA and AMD GPUs together. Within a vendor,
# the sources are tried in order. A new source is a module beside these and a line here
# (plus the DetectionSource member its answers carry).
SOURCES: Final[tuple[VendorSources, ...]] = (
    VendorSources(
        GpuVendor.NVIDIA,
        (
            detect_nvml,  # the driver's own library: fast and precise
            detect_nvidia_smi,  # for hosts where libnvidia-ml.so.1 cannot be loaded
        ),
    ),
    # amdsmi, else rocm-smi, else the kernel's sysfs (devices/detection/rocm.py).
    VendorSources(GpuVendor.AMD, (detect_rocm,)),
)


def detect(simulated_path: Path | None = None, *, with_processes: bool = False) -> Detection:
    """Detect this host's GPUs, every vendor's, each from its best available source.

    With ``simulated_path`` the file is the only source (its errors propagate as
    :class:`DetectionError`: a demo configured with a broken file should say so, not
    silently show real or no hardware). Otherwise each vendor's sources are tried in
    order (NVML, then nvidia-smi; then ROCm), and an empty inventory that says why when no
    vendor has any.

    Indexes: NVIDIA GPUs keep theirs (NVML's); AMD GPUs follow them, each keeping its own
    number in ``device_index`` (the ``amd.com/gpu=N`` name). So on a host with one vendor
    the index shown is the container device's.

    One vendor's failure never hides the other's GPUs (GPUStack lost an RTX 3080 to an AMD
    integrated GPU's error: its issue #3389). A broken AMD source leaves the NVIDIA GPUs
    with ``failed_vendors`` and a message; a broken NVIDIA source raises, because every AMD
    index would shift, and the caller keeps the last good inventory (AMD GPUs included).

    ``with_processes`` also lists the processes holding GPU memory. A simulated inventory
    has none to list: ``processes`` stays None (not measured). A failed process query never
    fails the detection; it leaves ``processes`` None and says why in ``process_note``.
    """
    if simulated_path is not None:
        return detect_simulated(simulated_path)

    reasons: list[str] = []
    answers: list[Detection] = []
    failures: list[tuple[GpuVendor, DetectionError]] = []
    for group in SOURCES:
        try:
            found = _first_available(group, reasons, with_processes=with_processes)
        except DetectionError as error:
            if group.vendor is GpuVendor.NVIDIA:
                raise
            failures.append((group.vendor, error))
            continue
        if found is not None:
            answers.append(found)
    if not answers:
        if failures:
            raise failures[0][1]
        return Detection(DetectionSource.NONE, (), message=f"No GPUs detected: {_and(reasons)}")
    merged = _merge(answers)
    notes = [merged.message] if merged.message else []
    if failures:
        notes.extend(str(error) for _, error in failures)
        merged = replace(merged, failed_vendors=tuple(vendor for vendor, _ in failures))
    return replace(merged, message=" ".join(notes))


def _first_available(
    group: VendorSources, reasons: list[str], *, with_processes: bool
) -> Detection | None:
    """The first source of ``group`` that can be used here; None when none can."""
    unavailable: list[str] = []
    for source in group.sources:
        try:
            found = source(with_processes=with_processes)
        except SourceUnavailable as error:
            unavailable.append(error.reason)
            continue
        if unavailable:
            return replace(
                found, message=f"Read through {found.source} because {_and(unavailable)}."
            )
        return found
    reasons.extend(unavailable)
    return None


def _merge(answers: list[Detection]) -> Detection:
    """One Detection from each vendor's: indexes made unique, processes joined."""
    if len(answers) == 1:
        return answers[0]
    gpus: list[GpuReading] = []
    for answer in answers:
        offset = len(gpus)
        gpus.extend(
            replace(gpu, index=offset + gpu.index, device_index=gpu.vendor_index)
            for gpu in answer.gpus
        )
    measured = [a.processes for a in answers if a.processes is not None]
    return Detection(
        source=answers[0].source,
        gpus=tuple(gpus),
        message=" ".join(a.message for a in answers if a.message)
        or "Read through " + " and ".join(str(a.source) for a in answers) + ".",
        processes=tuple(p for listed in measured for p in listed) if measured else None,
        process_note=" ".join(a.process_note for a in answers if a.process_note),
        unmeasured_uuids=tuple(u for a in answers for u in a.unmeasured_uuids),
    )


def _and(phrases: list[str]) -> str:
    """Join phrases as a sentence does: "a", "a and b", "a, b and c"."""
    if len(phrases) <= 1:
        return "".join(phrases)
    return f"{', '.join(phrases[:-1])} and {phrases[-1]}"
