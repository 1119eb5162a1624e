"""The runtime helper on an AMD GPU (issue 22): it finds the assigned GPU among those KFD
lets the container use, by unique id, and sets HIP_VISIBLE_DEVICES only (never
ROCR_VISIBLE_DEVICES: both at one non-zero index leave no GPU, gpustack#4033). KFD topology
captures of real machines stand in for the container's /sys."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from devices import runtime

KFD = Path(__file__).parent / "fixtures" / "rocm" / "kfd-topology"


@pytest.fixture
def amd_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        # Set, then removed: monkeypatch then removes what the helper sets, after the test.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv(runtime.VENDOR_ENV, "amd")
    monkeypatch.setenv(runtime.INDEX_ENV, "0")
    return monkeypatch


def test_hip_index_follows_kfd_order_not_the_bus_order(amd_env: pytest.MonkeyPatch) -> None:
    # 8 x MI210: KFD nodes 2, 3, 4 are on buses 0x63, 0x43, 0x03. GPU Config's GPU 0 (and
    # amd.com/gpu=0, rocm-smi's 0) is bus 0x03 = KFD node 4 = HIP's third GPU.
    amd_env.setattr(runtime, "KFD_NODES", str(KFD / "mi210-k8s-device-plugin" / "nodes"))
    amd_env.setenv(runtime.UUID_ENV, "GPU-93bb3629c01aea1c")

    assert runtime.get_target_gpu() == 0
    assert os.environ["HIP_VISIBLE_DEVICES"] == "2"
    assert "ROCR_VISIBLE_DEVICES" not in os.environ


def test_a_partition_is_found_by_its_uuid(amd_env: pytest.MonkeyPatch) -> None:
    # MI308X in CPX: GPU 0's four partitions (KFD nodes 2-5) share one unique id.
    amd_env.setattr(runtime, "KFD_NODES", str(KFD / "mi308x-cpx-k8s-device-plugin" / "nodes"))
    amd_env.setenv(runtime.UUID_ENV, "GPU-84cafeae17e7696-2")

    assert runtime.get_target_gpu() == 0
    assert os.environ["HIP_VISIBLE_DEVICES"] == "2"


def test_in_a_container_given_one_card_it_is_hip_device_0(
    amd_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # KFD keeps every node's folder but lets a container read only its own cards' properties:
    # given bus 0x03's card, the other two cannot be read.
    nodes = tmp_path / "nodes"
    shutil.copytree(KFD / "mi210-k8s-device-plugin" / "nodes", nodes)
    for hidden in ("2", "3"):
        (nodes / hidden / "properties").unlink()
    amd_env.setattr(runtime, "KFD_NODES", str(nodes))
    amd_env.setenv(runtime.UUID_ENV, "GPU-93bb3629c01aea1c")

    assert runtime.get_target_gpu() == 0
    assert os.environ["HIP_VISIBLE_DEVICES"] == "0"


def test_a_hip_setting_of_the_service_is_left_alone_with_a_warning(
    amd_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    amd_env.setattr(runtime, "KFD_NODES", str(KFD / "mi210-k8s-device-plugin" / "nodes"))
    amd_env.setenv(runtime.UUID_ENV, "GPU-93bb3629c01aea1c")
    amd_env.setenv("HIP_VISIBLE_DEVICES", "1")

    with caplog.at_level(logging.WARNING):
        assert runtime.get_target_gpu() == 0

    assert os.environ["HIP_VISIBLE_DEVICES"] == "1"
    assert "HIP_VISIBLE_DEVICES=1 is set by the service's environment" in caplog.text


def test_no_kfd_means_no_amd_gpu(amd_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    amd_env.setattr(runtime, "KFD_NODES", str(tmp_path / "missing"))
    amd_env.setenv(runtime.UUID_ENV, "GPU-93bb3629c01aea1c")

    with pytest.raises(runtime.NoGpuAvailableError, match="KFD lists no GPU"):
        runtime.get_target_gpu()
