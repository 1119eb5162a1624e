"""What runs against what a configuration says (pure): drift, the apply's steps."""

from __future__ import annotations

from gpuconfig.domain import Configuration, ResolvedAssignment
from orchestration.observed import Mismatch, difference, observed_service, services_to_recreate
from orchestration.podman import ContainerState

UUID0 = "GPU-00000000-0000-0000-0000-000000000000"


def _want(gpu: int | None = 0, *, enabled: bool = True) -> ResolvedAssignment:
    return ResolvedAssignment("ai-llm", gpu, gpu_uuid=UUID0 if gpu == 0 else "", enabled=enabled)


def _state(
    devices: tuple[str, ...] = ("nvidia.com/gpu=0",),
    *,
    status: str = "running",
    env: dict[str, str] | None = None,
) -> ContainerState:
    if env is None:
        env = {"GPUCONFIG_GPU_UUID": UUID0, "GPUCONFIG_GPU_INDEX": "0"} if devices else {}
    return ContainerState(
        id="c0ffee" * 4,
        name="proj_ai-llm_1",
        service="ai-llm",
        running=status == "running",
        status=status,
        health=None,
        cdi_devices=devices,
        env=env,
    )


def test_a_container_as_configured_has_no_difference():
    assert difference(_state(), _want()) is None


def test_each_way_of_drifting_is_named():
    assert difference(None, _want()).kind is Mismatch.NO_CONTAINER
    assert difference(_state(status="exited"), _want()).reason == (
        "its container is exited, not running"
    )
    assert difference(_state(()), _want()).kind is Mismatch.NO_DEVICE
    other = difference(_state(("nvidia.com/gpu=1",)), _want())
    assert (other.kind, other.reason) == (
        Mismatch.OTHER_GPU,
        "runs on nvidia.com/gpu=1, expected nvidia.com/gpu=0",
    )
    assert difference(_state(), _want(None, enabled=False)).kind is Mismatch.UNEXPECTED_GPU
    settings = difference(_state(env={"GPUCONFIG_GPU_UUID": "GPU-x"}), _want())
    assert settings.kind is Mismatch.SETTINGS


def test_the_steps_are_the_services_that_differ_from_the_target_not_from_a_version():
    target = Configuration(
        (
            ResolvedAssignment("ai-llm", 0, gpu_uuid=UUID0),
            ResolvedAssignment("ai-clip", 0, gpu_uuid=UUID0),
        )
    )
    running = {"ai-llm": _state()}  # ai-clip's container was removed
    assert list(services_to_recreate(target, running)) == ["ai-clip"]


def test_nothing_applied_means_nothing_drifted_but_what_runs_is_shown():
    shown = observed_service("ai-llm", _state(), None, {0: UUID0})
    assert (shown["gpu"], shown["gpu_uuid"], shown["drifted"], shown["planned_gpu"]) == (
        0,
        UUID0,
        False,
        None,
    )
