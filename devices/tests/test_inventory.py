"""Re-scan upserts the inventory and marks disappeared GPUs; bad input changes nothing."""

from __future__ import annotations

import dataclasses
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from devices import services
from devices.models import GpuDevice
from devices.services import gpu_inventory_rescan, gpu_sample

pytestmark = pytest.mark.django_db


def _write_gpus(path: Path, gpus: list[dict]) -> Path:
    path.write_text(json.dumps({"gpus": gpus}))
    return path


def _gpu(index: int, name: str, total: int, used: int = 100) -> dict:
    return {
        "index": index,
        "name": name,
        "vram_total_mb": total,
        "vram_used_mb": used,
        "compute_capability": "8.6",
    }


def test_rescan_creates_the_reference_gpus():
    result = gpu_inventory_rescan()

    assert result.added == [0, 1]
    rows = list(GpuDevice.objects.values_list("gpu_index", "name", "vram_total_mb", "present"))
    assert rows == [(0, "NVIDIA RTX A5500", 24564, True), (1, "NVIDIA RTX A400", 4094, True)]
    a400 = GpuDevice.objects.get(gpu_index=1)
    assert a400.vram_available_mb == 4094 - 329
    assert a400.compute_capability == "8.6"


def test_rescan_updates_in_place_and_marks_a_removed_gpu(settings, tmp_path):
    gpu_inventory_rescan()
    first_seen = GpuDevice.objects.get(gpu_index=1).last_seen_at
    ids = dict(GpuDevice.objects.values_list("gpu_index", "id"))

    settings.GPUCONFIG_SIMULATED_GPUS = _write_gpus(
        tmp_path / "one.json", [_gpu(0, "NVIDIA RTX A5500", 24564, used=5000)]
    )
    result = gpu_inventory_rescan()

    assert result.updated == [0]
    assert result.disappeared == [1]
    a5500 = GpuDevice.objects.get(gpu_index=0)
    assert a5500.id == ids[0], "re-scan must update the row, not replace it"
    assert a5500.vram_available_mb == 24564 - 5000
    gone = GpuDevice.objects.get(gpu_index=1)
    assert gone.present is False
    assert gone.last_seen_at == first_seen, "last_seen_at keeps when it was really last seen"


def test_a_gpu_that_comes_back_is_present_again(settings, tmp_path):
    gpu_inventory_rescan()
    settings.GPUCONFIG_SIMULATED_GPUS = _write_gpus(
        tmp_path / "one.json", [_gpu(0, "NVIDIA RTX A5500", 24564)]
    )
    gpu_inventory_rescan()
    settings.GPUCONFIG_SIMULATED_GPUS = _write_gpus(
        tmp_path / "two.json",
        [_gpu(0, "NVIDIA RTX A5500", 24564), _gpu(1, "NVIDIA RTX A400", 4094)],
    )
    result = gpu_inventory_rescan()
    assert result.updated == [0, 1]
    assert GpuDevice.objects.filter(present=True).count() == 2


def test_malformed_file_keeps_the_last_good_inventory(settings, tmp_path):
    gpu_inventory_rescan()
    before = list(GpuDevice.objects.values_list("gpu_index", "name", "present", "last_seen_at"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"gpus": [{"index": 0, "name": "X"')
    settings.GPUCONFIG_SIMULATED_GPUS = bad

    result = gpu_inventory_rescan()

    assert str(bad) in result.sample.error
    assert result.disappeared == []
    after = list(GpuDevice.objects.values_list("gpu_index", "name", "present", "last_seen_at"))
    assert after == before
    # The live readings fall back to the inventory rather than going blank.
    assert [r.name for r in result.sample.readings] == ["NVIDIA RTX A5500", "NVIDIA RTX A400"]


def test_the_sample_is_shared_for_about_a_second():
    calls_before = services._sampler.detections
    for _ in range(50):
        gpu_sample()
    assert services._sampler.detections - calls_before == 1

    # Once the sample is older than GPUCONFIG_SAMPLE_SECONDS, the next caller refreshes it.
    services._sampler.current = dataclasses.replace(services._sampler.current, taken_monotonic=0.0)
    gpu_sample()
    assert services._sampler.detections - calls_before == 2


def test_detect_gpus_command_prints_a_table():
    out = StringIO()
    call_command("detect_gpus", stdout=out)
    text = out.getvalue()
    assert "Source: simulated" in text
    assert "NVIDIA RTX A5500" in text and "24,564" in text
    assert "NVIDIA RTX A400" in text and "4,094" in text
    assert GpuDevice.objects.count() == 2


def test_detect_gpus_command_fails_clearly_on_a_bad_file(settings, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    settings.GPUCONFIG_SIMULATED_GPUS = bad
    with pytest.raises(CommandError, match="inventory left unchanged"):
        call_command("detect_gpus", stdout=StringIO())
