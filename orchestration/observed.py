"""What runs, compared with what a configuration says should run (pure: no database, no podman).

One rule decides three things, so they can never disagree: whether a service has *drifted*
from the applied version (the page, the status API and the GPUs API), which services an Apply
recreates (the difference between the target version and what runs, not between two
versions), and part of the verification of a freshly recreated container.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gpuconfig.config_files import budget_environment
from gpuconfig.domain import Configuration, ResolvedAssignment
from orchestration.podman import ContainerState

GPU_DEVICE_PREFIX = "nvidia.com/gpu="
AMD_DEVICE_PREFIX = "amd.com/gpu="
# An AMD GPU given without a CDI spec: /dev/kfd plus the card's render node.
RENDER_NODE_PREFIX = "/dev/dri/renderD"


class Mismatch(StrEnum):
    """Why a container does not run as its configuration says."""

    NO_CONTAINER = "no_container"
    STOPPED = "stopped"
    NO_DEVICE = "no_device"
    OTHER_GPU = "other_gpu"
    UNEXPECTED_GPU = "unexpected_gpu"
    SETTINGS = "settings"
    # Several hosts: it also runs on a host where the applied version does not place it.
    RUNNING_ELSEWHERE = "running_elsewhere"


@dataclass(frozen=True)
class Difference:
    """One service whose container differs from its configuration, and the sentence why."""

    kind: Mismatch
    reason: str


def gpu_devices(state: ContainerState) -> list[str]:
    """The GPU devices a container was given: CDI names of either vendor, render nodes."""
    cdi = [d for d in state.cdi_devices if d.startswith((GPU_DEVICE_PREFIX, AMD_DEVICE_PREFIX))]
    return cdi + [d for d in state.device_nodes if d.startswith(RENDER_NODE_PREFIX)]


def expected_devices(want: ResolvedAssignment) -> tuple[str, ...]:
    """The device names that give a container ``want``'s GPU (any one of them will do): the
    vendor's CDI name, and for AMD also its render node (a host without amd.com/gpu spec)."""
    if want.gpu_vendor == "amd":
        index = want.gpu_device_index if want.gpu_device_index is not None else want.gpu_index
        node = (want.gpu_render_node,) if want.gpu_render_node else ()
        return (f"{AMD_DEVICE_PREFIX}{index}", *node)
    return (f"{GPU_DEVICE_PREFIX}{want.gpu_index}",)


def running_gpu(state: ContainerState | None, want: ResolvedAssignment | None = None) -> int | None:
    """The host index of the GPU a container really got, or None.

    An NVIDIA CDI name carries GPU Config's index; an AMD device is recognised when it is the
    one ``want`` (the configuration's entry) names, since AMD's own numbers follow the NVIDIA
    GPUs on a host with both."""
    if state is None:
        return None
    devices = gpu_devices(state)
    if (
        want is not None
        and want.gpu_index is not None
        and any(device in devices for device in expected_devices(want))
    ):
        return want.gpu_index
    for device in devices:
        if not device.startswith(GPU_DEVICE_PREFIX):
            continue
        index = device.removeprefix(GPU_DEVICE_PREFIX)
        if index.isascii() and index.isdigit():
            return int(index)
    return None


def gpu_difference(state: ContainerState, want: ResolvedAssignment) -> Difference | None:
    """A running container against one assignment: its GPU device and the variables GPU
    Config puts in its environment (UUID, index, budget)."""
    gpus = gpu_devices(state)
    if not want.placed or want.gpu_index is None:
        if gpus:
            return Difference(
                Mismatch.UNEXPECTED_GPU, f"should have no GPU but has {', '.join(gpus)}"
            )
        return None
    expected = expected_devices(want)
    device = " or ".join(expected)
    if not any(name in gpus for name in expected):
        if not gpus:
            return Difference(
                Mismatch.NO_DEVICE,
                f"runs without any GPU device (expected {device}): was it started without "
                "the override?",
            )
        return Difference(Mismatch.OTHER_GPU, f"runs on {', '.join(gpus)}, expected {device}")
    wrong = [
        f"{key} is {state.env.get(key)!r}, expected {value!r}"
        for key, value in budget_environment(want).items()
        if state.env.get(key) != value
    ]
    return Difference(Mismatch.SETTINGS, wrong[0]) if wrong else None


def difference(state: ContainerState | None, want: ResolvedAssignment) -> Difference | None:
    """Why the container of a service does not run as ``want`` says, or None when it does."""
    if state is None:
        return Difference(Mismatch.NO_CONTAINER, "has no container")
    if not state.running:
        return Difference(Mismatch.STOPPED, f"its container is {state.status}, not running")
    return gpu_difference(state, want)


def services_to_recreate(
    target: Configuration, running: Mapping[str, ContainerState]
) -> dict[str, Difference]:
    """The services of ``target`` whose containers do not run as it says, in name order."""
    found = {}
    for entry in sorted(target.assignments, key=lambda a: a.service):
        why = difference(running.get(entry.service), entry)
        if why is not None:
            found[entry.service] = why
    return found


def observed_service(
    name: str,
    state: ContainerState | None,
    applied: Configuration | None,
    uuid_by_index: Mapping[int, str],
) -> dict[str, Any]:
    """One service as it runs, beside what the applied version says (the API's shape)."""
    want = applied.get(name) if applied is not None else None
    gpu = running_gpu(state, want)
    drift = difference(state, want) if want is not None else None
    return {
        "state": state.status if state is not None else "missing",
        "health": state.health if state is not None else None,
        "id": state.id[:12] if state is not None else None,
        "container": state.name if state is not None else None,
        "gpu": gpu,  # running on: the GPU the container really got
        "gpu_uuid": uuid_by_index.get(gpu) if gpu is not None else None,
        "planned_gpu": want.container_gpu if want is not None else None,
        "drifted": drift is not None,
        "drift": drift.kind.value if drift is not None else None,
        "drift_reason": drift.reason if drift is not None else "",
    }
