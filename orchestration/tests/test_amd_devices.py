"""An AMD GPU in the override and in verification (issue 22), without podman: the CDI name
``amd.com/gpu=N`` when the host has amd-ctk's spec, otherwise /dev/kfd plus the card's render
node; a container is judged by whichever of the two it was given. The real-podman path is in
test_apply_amd_containers.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from gpuconfig.config_files import render_override
from gpuconfig.domain import ResolvedAssignment
from orchestration.executor import container_problem
from orchestration.observed import Mismatch, difference, running_gpu
from orchestration.override import host_has_cdi_kind
from orchestration.podman import ContainerState
from orchestration.podman.containers import _requested_device_nodes

GENERATED_AT = datetime(2026, 11, 26, 21, 30, 5, tzinfo=UTC)
RX_UUID = "GPU-5c88007d760374f3"
# GPU Config's GPU 2 on a host with two NVIDIA GPUs first: AMD's own card 0, whose render
# node is renderD128 and its DRM card card1 (gpustack-runtime's RX 7800 XT capture).
CLIP = ResolvedAssignment(
    "ai-clip",
    2,
    gpu_uuid=RX_UUID,
    gpu_name="AMD Radeon RX 7800 XT",
    gpu_vendor="amd",
    gpu_device_index=0,
    gpu_render_node="/dev/dri/renderD128",
)
EXPECTED_ENV = {
    "GPUCONFIG_GPU_UUID": RX_UUID,
    "GPUCONFIG_GPU_INDEX": "2",
    "GPUCONFIG_GPU_VENDOR": "amd",
}


def _services(text: str) -> dict:
    return YAML(typ="safe").load(text)["services"]


def test_an_amd_service_gets_its_cdi_name_when_the_host_has_the_spec() -> None:
    text = render_override([CLIP], version=3, generated_at=GENERATED_AT, amd_cdi=True)

    # podman-compose maps only driver: nvidia reservations; "devices" reach podman as written.
    assert _services(text) == {
        "ai-clip": {"devices": ["amd.com/gpu=0"], "environment": EXPECTED_ENV}
    }
    assert '- "amd.com/gpu=0"  # AMD Radeon RX 7800 XT' in text


def test_without_the_spec_an_amd_service_gets_kfd_and_its_render_node() -> None:
    text = render_override([CLIP], version=3, generated_at=GENERATED_AT, amd_cdi=False)

    assert _services(text)["ai-clip"]["devices"] == ["/dev/kfd", "/dev/dri/renderD128"]


def test_without_the_spec_or_a_render_node_the_override_is_refused() -> None:
    unknown = ResolvedAssignment("ai-clip", 2, gpu_vendor="amd", gpu_device_index=0)

    with pytest.raises(ValueError, match="no known render node"):
        render_override([unknown], version=3, generated_at=GENERATED_AT, amd_cdi=False)


def _state(cdi: tuple[str, ...] = (), nodes: tuple[str, ...] = ()) -> ContainerState:
    return ContainerState(
        id="c0ffee" * 4,
        name="proj_ai-clip_1",
        service="ai-clip",
        running=True,
        status="running",
        health=None,
        cdi_devices=cdi,
        env=EXPECTED_ENV,
        device_nodes=nodes,
    )


def test_a_container_with_its_amd_cdi_device_or_its_render_node_runs_as_configured() -> None:
    by_cdi = _state(cdi=("amd.com/gpu=0",))
    by_nodes = _state(nodes=("/dev/kfd", "/dev/dri/renderD128"))

    assert difference(by_cdi, CLIP) is None
    assert difference(by_nodes, CLIP) is None
    # The AMD card's own number is not GPU Config's index: it is recognised as GPU 2.
    assert running_gpu(by_cdi, CLIP) == 2
    assert running_gpu(by_nodes, CLIP) == 2


def test_another_amd_card_is_drift_and_fails_verification() -> None:
    other = _state(cdi=("amd.com/gpu=1",))

    drift = difference(other, CLIP)

    assert drift is not None
    assert drift.kind is Mismatch.OTHER_GPU
    assert drift.reason == ("runs on amd.com/gpu=1, expected amd.com/gpu=0 or /dev/dri/renderD128")
    assert container_problem(other, CLIP, GENERATED_AT, check_gpu=True) == (
        "started without its GPU: expected amd.com/gpu=0 or /dev/dri/renderD128, got "
        "amd.com/gpu=1 (is the compose command dropping GPU reservations?)"
    )


def test_device_nodes_are_read_from_the_create_command() -> None:
    command = [
        "podman", "create", "--name=x", "--device", "/dev/kfd",
        "--device=/dev/dri/renderD128:/dev/dri/renderD128:rwm", "--device", "amd.com/gpu=0",
        "localhost/img", "--device", "/dev/not-ours",
    ]  # fmt: skip

    assert _requested_device_nodes(command, image="localhost/img") == (
        "/dev/kfd",
        "/dev/dri/renderD128",
    )


@pytest.mark.parametrize(
    ("spec", "found"),
    [
        # amd-ctk's default output is JSON (/etc/cdi/amd.json).
        ('{"cdiVersion":"0.6.0","kind":"amd.com/gpu","devices":[{"name":"0"}]}', True),
        ('cdiVersion: "0.5.0"\nkind: amd.com/gpu\ndevices: []\n', True),
        ('cdiVersion: "0.5.0"\nkind: "nvidia.com/gpu"\ndevices: []\n', False),
    ],
)
def test_the_amd_cdi_spec_is_found_in_either_format(tmp_path: Path, spec: str, found: bool) -> None:
    (tmp_path / ("amd.json" if spec.startswith("{") else "spec.yaml")).write_text(spec)

    assert host_has_cdi_kind("amd.com/gpu", dirs=(tmp_path / "missing", tmp_path)) is found
