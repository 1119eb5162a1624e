"""GPU detection: what NVIDIA and AMD GPUs does this host have, and what are they doing?

The sources, consulted by :func:`detect` (``chain.py``):

1. A *simulated* inventory file, when one is configured (``simulated.py``): demo and test
   machines have no GPU, and the product still has to show the design's reference hardware.
2. NVML through ``pynvml`` (``nvml.py``): the same library the driver ships, fast and precise.
3. ``nvidia-smi`` as a subprocess (``nvidia_smi.py``): present on hosts where the Python
   process cannot load ``libnvidia-ml.so.1`` (e.g. the app runs in a container without the
   driver libraries mounted, but the binary is reachable).
4. ROCm for AMD GPUs (``rocm.py``, ``rocm_smi.py``, ``rocm_cards.py``): the ``amdsmi``
   bindings, else ``rocm-smi --json``, else the kernel's sysfs. NVIDIA's and AMD's sources
   are both consulted: one host can hold both, and one vendor's failure never hides the
   other's GPUs.

What they all report, and how they fail, is in ``types.py``. "Unavailable" (no library, no
binary) and "broken" (garbage output, a GPU that fell off the bus) are different failures on
purpose: unavailable means "fall back to the next source", broken means "do not trust this
scan", and the caller keeps the last good inventory instead of replacing it with an empty one.

This package knows nothing about Django (an import-linter contract holds it to that); the
``devices`` models and services call it. The names below are the package's public face:
callers import them from ``devices.detection``.
"""

from devices.detection.chain import SOURCES, GpuSource, VendorSources, detect
from devices.detection.nvidia_smi import (
    SMI_PROCESS_FIELDS,
    SMI_QUERY_FIELDS,
    NvidiaSmiUnavailable,
    read_nvidia_smi,
    read_nvidia_smi_processes,
)
from devices.detection.nvml import MIB, NvmlScan, NvmlUnavailable, read_nvml, read_nvml_scan
from devices.detection.rocm import RocmUnavailable, parse_rocm_smi, read_sysfs
from devices.detection.simulated import read_simulated, simulated_uuid
from devices.detection.types import (
    Detection,
    DetectionError,
    DetectionSource,
    GpuProcess,
    GpuReading,
    GpuVendor,
    SourceUnavailable,
)

__all__ = [
    "MIB",
    "SMI_PROCESS_FIELDS",
    "SMI_QUERY_FIELDS",
    "SOURCES",
    "Detection",
    "DetectionError",
    "DetectionSource",
    "GpuProcess",
    "GpuReading",
    "GpuSource",
    "GpuVendor",
    "NvidiaSmiUnavailable",
    "NvmlScan",
    "NvmlUnavailable",
    "RocmUnavailable",
    "SourceUnavailable",
    "VendorSources",
    "detect",
    "parse_rocm_smi",
    "read_nvidia_smi",
    "read_nvidia_smi_processes",
    "read_nvml",
    "read_nvml_scan",
    "read_simulated",
    "read_sysfs",
    "simulated_uuid",
]
