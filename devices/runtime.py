"""Which GPU should this AI service use?  (``get_target_gpu``)

This file is meant to be copied into AI service images or imported on its own: it uses
only the standard library plus ``pynvml`` (nvidia-ml-py), which it imports lazily, and it
imports nothing from GPU Config or Django. It keeps to Python 3.8 syntax because service
images often run an older interpreter than the GPU Config app.

Why match by UUID, not by index: GPU Config hands a service its GPU through CDI
(``nvidia.com/gpu=<host index>``), so inside the container that GPU is the only one and CUDA
calls it device 0, whatever its host index is; and a host index can name another GPU after
re-cabling. The generated override therefore sets

* ``GPUCONFIG_GPU_UUID``: the assigned GPU's UUID, the identity to look for;
* ``GPUCONFIG_GPU_INDEX``: its host index, only to make log messages recognisable.

The same identity, compared the same way (:func:`same_gpu`), is what GPU Config's own
verification after Apply checks: the variable names are defined here once, and the override
renderer and the verification import them.

Usage in a service::

    from runtime import get_target_gpu
    device = f"cuda:{get_target_gpu()}"

AMD GPUs (ROCm). The override also sets ``GPUCONFIG_GPU_VENDOR=amd`` for a service placed on
an AMD GPU, and :func:`get_target_gpu` then finds the assigned GPU among those the
container's KFD shows (by unique id, read from sysfs: no ROCm library needed), sets
``HIP_VISIBLE_DEVICES`` to its HIP index and returns 0 (PyTorch's ROCm build also says
``cuda:0``). Numbering differs between the layers, which is why nothing here trusts a host
index:

* rocm-smi, amd-smi and amd-ctk's CDI spec (``amd.com/gpu=N``): cards in PCI bus order,
  partitions under their card. GPU Config's index follows this one.
* ROCr (``ROCR_VISIBLE_DEVICES``) and HIP (``HIP_VISIBLE_DEVICES``): KFD topology order,
  CPU nodes left out, which need not be bus order (8 x MI210: HIP 0 was rocm-smi's 3).
  HIP renumbers from 0 what ROCr left visible.
* DRM ``cardN``/``renderD<M>``: neither (an RX 7800 XT at index 0 is card1 + renderD128).

Only ``HIP_VISIBLE_DEVICES`` is set: setting ``ROCR_VISIBLE_DEVICES`` to the same non-zero
index as well leaves no GPU at all (ROCr keeps GPU N, then HIP looks for an N-th among one:
gpustack#4033). A variable the service's own environment already sets is left alone.
"""

from __future__ import annotations

import logging
import os
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

UUID_ENV = "GPUCONFIG_GPU_UUID"
INDEX_ENV = "GPUCONFIG_GPU_INDEX"
VENDOR_ENV = "GPUCONFIG_GPU_VENDOR"  # "amd" for an AMD GPU; absent: NVIDIA
HIP_ENV = "HIP_VISIBLE_DEVICES"
# Where the kernel lists the GPUs this container may use (KFD hides others' properties).
KFD_NODES = "/sys/class/kfd/kfd/topology/nodes"


def same_gpu(uuid_a: str, uuid_b: str) -> bool:
    """Whether two GPU UUIDs name the same GPU (case and surrounding blanks do not matter).

    NVML prints ``GPU-`` plus lowercase hex; people and tools copy UUIDs in other cases.
    An empty UUID names no GPU.
    """
    a, b = uuid_a.strip().lower(), uuid_b.strip().lower()
    return bool(a) and a == b


class NoGpuAvailableError(RuntimeError):
    """No GPU can be used in this process: NVML is unusable or no GPU is visible."""


class _Device(NamedTuple):
    """One GPU as this process sees it."""

    uuid: str
    # Bytes of free memory, or None when NVML cannot tell (ranked last for fallback).
    free_bytes: int | None
    # Why the GPU cannot be used (e.g. "GPU is lost"), or None when it is usable.
    problem: str | None


def get_target_gpu() -> int:
    """Return the CUDA device index this service should use.

    * ``GPUCONFIG_GPU_UUID`` set and that GPU visible: its local index (0 under CDI).
    * Set but not visible or not usable: a warning is logged and the visible GPU with
      the most free memory is returned, so the service still starts.
    * Not set: the first usable visible GPU (normally 0).

    The index counts the GPUs CUDA can see: NVML's list, narrowed and reordered by
    ``CUDA_VISIBLE_DEVICES`` when that is set. When several GPUs are visible and
    ``CUDA_DEVICE_ORDER`` is unset, it is set to ``PCI_BUS_ID`` so CUDA numbers them in
    NVML's order (this only works when called before CUDA is initialised, e.g. before the
    first ``torch.cuda`` call).

    Raises :class:`NoGpuAvailableError` when NVML cannot be used or no GPU is usable.
    """
    assigned_uuid = os.environ.get(UUID_ENV, "").strip()
    host_index = os.environ.get(INDEX_ENV, "").strip() or "unknown"
    if os.environ.get(VENDOR_ENV, "").strip().lower() == "amd":
        return _amd_target(assigned_uuid, host_index)

    devices = _cuda_visible(_nvml_devices())
    if not devices:
        raise NoGpuAvailableError(_no_gpu_message(assigned_uuid, host_index, "no GPU is visible"))
    if len(devices) > 1:
        _align_cuda_order()

    if assigned_uuid:
        for local_index, device in enumerate(devices):
            if same_gpu(device.uuid, assigned_uuid):
                if device.problem is None:
                    return local_index
                reason = f"NVML reports {device.problem}"
                break
        else:
            visible = ", ".join(device.uuid for device in devices)
            reason = f"not among the {len(devices)} visible GPU(s) ({visible})"
        fallback = _most_free_memory(devices)
        if fallback is None:
            raise NoGpuAvailableError(
                _no_gpu_message(assigned_uuid, host_index, f"{reason}, and no other GPU is usable")
            )
        free = devices[fallback].free_bytes
        logger.warning(
            "Assigned GPU %s (host index %s) unavailable: %s; falling back to GPU %d (%s)",
            assigned_uuid,
            host_index,
            reason,
            fallback,
            "free memory unknown" if free is None else f"{free // 1024**2} MiB free",
        )
        return fallback

    for local_index, device in enumerate(devices):
        if device.problem is None:
            return local_index
    problems = "; ".join(f"GPU {i}: {device.problem}" for i, device in enumerate(devices))
    raise NoGpuAvailableError(_no_gpu_message("", host_index, f"no GPU is usable ({problems})"))


def _amd_target(assigned_uuid: str, host_index: str) -> int:
    """Point HIP at the assigned AMD GPU (``HIP_VISIBLE_DEVICES``) and return 0.

    Without the assigned GPU among the visible ones: a warning, and HIP's first GPU.
    """
    uuids = amd_visible_uuids()
    if not uuids:
        raise NoGpuAvailableError(
            _no_gpu_message(assigned_uuid, host_index, f"KFD lists no GPU in {KFD_NODES}")
        )
    hip_index = next((i for i, uuid in enumerate(uuids) if same_gpu(uuid, assigned_uuid)), None)
    if hip_index is None:
        logger.warning(
            "Assigned AMD GPU %s (host index %s) is not among the %d visible (%s); using HIP "
            "device 0",
            assigned_uuid or "(none)",
            host_index,
            len(uuids),
            ", ".join(uuids),
        )
        hip_index = 0
    if HIP_ENV in os.environ:
        if os.environ[HIP_ENV].strip() != str(hip_index):
            logger.warning(
                "%s=%s is set by the service's environment; GPU Config would set %d",
                HIP_ENV,
                os.environ[HIP_ENV],
                hip_index,
            )
        return 0
    os.environ[HIP_ENV] = str(hip_index)
    return 0


def amd_visible_uuids() -> list[str]:
    """The UUIDs (``GPU-`` + unique id in hex) of the AMD GPUs KFD lets this process use, in
    KFD node order (HIP's order). A partitioned card's partitions share its unique id and
    get ``-0``, ``-1``, ... in PCI function order, as GPU Config names them."""
    nodes = []
    try:
        names = sorted((n for n in os.listdir(KFD_NODES) if n.isdigit()), key=int)
    except OSError:
        return []
    for name in names:
        try:
            with open(os.path.join(KFD_NODES, name, "properties"), encoding="ascii") as file:
                text = file.read()
        except OSError:
            continue  # outside this container's device cgroup: not visible to it
        properties = {}
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                properties[key] = int(value)
        if properties.get("simd_count", 0) > 0:
            nodes.append(properties)
    shared: dict[int, list[dict[str, int]]] = {}
    for properties in nodes:
        shared.setdefault(properties.get("unique_id", 0), []).append(properties)
    uuids = []
    for properties in nodes:
        unique_id = properties.get("unique_id", 0)
        uuid = f"GPU-{unique_id:x}"
        siblings = shared[unique_id]
        if unique_id and len(siblings) > 1:
            order = sorted(siblings, key=lambda p: p.get("location_id", 0))
            uuid += f"-{next(i for i, p in enumerate(order) if p is properties)}"
        uuids.append(uuid)
    return uuids


def _no_gpu_message(assigned_uuid: str, host_index: str, reason: str) -> str:
    if assigned_uuid:
        return (
            f"No GPU available for assigned GPU {assigned_uuid} (host index {host_index}): "
            f"{reason}."
        )
    return f"No GPU available: {reason}."


def _nvml_devices() -> list[_Device]:
    """Enumerate the GPUs NVML can see, in NVML (PCI bus) order.

    A GPU whose handle or UUID cannot be read stays in the list, marked with its problem,
    so the positions of the others keep matching CUDA's numbering.
    """
    try:
        import pynvml  # Imported here so importing this module never needs the driver.
    except ImportError:
        raise NoGpuAvailableError(
            "No GPU available: pynvml is not installed (pip install nvidia-ml-py)."
        ) from None

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        raise NoGpuAvailableError(f"No GPU available: NVML cannot be used ({error}).") from error
    try:
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as error:
            raise NoGpuAvailableError(
                f"No GPU available: NVML cannot count the GPUs ({error})."
            ) from error
        return [_read_device(pynvml, index) for index in range(count)]
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as error:
            logger.debug("nvmlShutdown failed: %s", error)


def _read_device(pynvml: Any, index: int) -> _Device:
    """Read one GPU's UUID and free memory; NVML errors mark the GPU instead of aborting."""
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
    except pynvml.NVMLError as error:
        return _Device(uuid=f"<NVML device {index}>", free_bytes=None, problem=str(error))
    if isinstance(uuid, bytes):  # Older nvidia-ml-py releases return bytes.
        uuid = uuid.decode("ascii", errors="replace")
    try:
        free_bytes: int | None = int(pynvml.nvmlDeviceGetMemoryInfo(handle).free)
    except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_NoPermission):
        free_bytes = None  # Still usable; it just ranks last when picking a fallback.
    except pynvml.NVMLError as error:
        # The GPU answers to its name but not to a basic query (e.g. "GPU is lost").
        return _Device(uuid=uuid, free_bytes=None, problem=str(error))
    return _Device(uuid=uuid, free_bytes=free_bytes, problem=None)


def _cuda_visible(devices: list[_Device]) -> list[_Device]:
    """Narrow NVML's list to what CUDA sees, following ``CUDA_VISIBLE_DEVICES``.

    NVML ignores that variable but CUDA renumbers from 0 along it. As in CUDA, an entry
    is a device index or a (prefix of a) ``GPU-`` UUID, and the list stops at the first
    entry that names no device; ``MIG-`` entries are not resolvable through NVML device
    handles and stop it too.
    """
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return devices
    visible: list[_Device] = []
    for entry in (part.strip() for part in raw.split(",")):
        if entry.isdigit():
            position = int(entry)
            device = devices[position] if position < len(devices) else None
        elif entry.upper().startswith("GPU-"):
            matches = [d for d in devices if d.uuid.lower().startswith(entry.lower())]
            device = matches[0] if len(matches) == 1 else None
        else:
            device = None
        if device is None or any(seen is device for seen in visible):
            break
        visible.append(device)
    return visible


def _align_cuda_order() -> None:
    """Make CUDA number several GPUs in NVML's (PCI bus) order, or warn that it won't.

    CUDA's default order is "fastest first", so without this the index returned here
    could name a different GPU in CUDA.
    """
    order = os.environ.get("CUDA_DEVICE_ORDER")
    if order is None:
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    elif order != "PCI_BUS_ID":
        logger.warning(
            "CUDA_DEVICE_ORDER=%s: CUDA may number the GPUs differently from NVML; "
            "set CUDA_DEVICE_ORDER=PCI_BUS_ID so the selected GPU is the intended one",
            order,
        )


def _most_free_memory(devices: list[_Device]) -> int | None:
    """Return the local index of the usable GPU with the most free memory, or None."""
    usable = [(i, device) for i, device in enumerate(devices) if device.problem is None]
    if not usable:
        return None
    # Unknown free memory ranks below any known amount; ties keep the lowest index.
    best = max(
        usable,
        key=lambda item: (-1 if item[1].free_bytes is None else item[1].free_bytes, -item[0]),
    )
    return best[0]
