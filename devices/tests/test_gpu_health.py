"""GPU health: the recorded H100 replayed, NVML stand-ins built from NVML's documented
behaviour (a card answering NotSupported, an uncorrected ECC count rising, an Xid 79
event on the event set), the nvidia-smi fallback and a simulated file; the automatic
cordon on the gpu_devices row and what the GPUs API says."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from devices.detection.health import HealthReadings, HealthState, assess
from devices.detection.nvidia_smi import detect_nvidia_smi
from devices.detection.nvml import read_nvml
from devices.detection.simulated import read_simulated
from devices.gpu_health import reset_health_state
from devices.models import GpuDevice
from devices.services import gpu_inventory_rescan, gpu_sample, reset_sampler
from devices.tests.conftest import FakeNvml
from devices.tests.nvml_health_fake import CardHealth, HealthNvml

FIXTURES = Path(__file__).parent / "fixtures"
H100_XML = FIXTURES / "h100" / "nvidia-smi-q.xml"
UNC, CORR = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
VOL, AGG = pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC
H100_UUID = "GPU-2b8e4f61-c0d3-4a97-8e15-7f9a3b6d2c80"


@pytest.fixture
def health_nvml(fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> Iterator[HealthNvml]:
    fake = HealthNvml(fake_nvml)
    fake.install(monkeypatch)
    reset_health_state()
    reset_sampler()
    yield fake
    reset_health_state()
    reset_sampler()


def _h100_card() -> CardHealth:
    """The recorded H100's health as its `nvidia-smi -q -x` reports it (driver 580)."""
    # The project's own recording, not untrusted input.
    gpu = ET.parse(H100_XML).getroot().find("gpu")  # noqa: S314
    assert gpu is not None

    def total(scope: str, kind: str) -> int:
        errors = gpu.find(f"ecc_errors/{scope}")
        assert errors is not None
        return sum(int(e.text or 0) for e in errors if e.tag.endswith(kind))

    rows = gpu.find("remapped_rows")
    assert rows is not None
    events = gpu.find("clocks_event_reasons")
    assert events is not None
    active = {e.tag.removeprefix("clocks_event_reason_") for e in events if e.text == "Active"}
    limit = gpu.findtext("gpu_power_readings/current_power_limit") or ""
    return CardHealth(
        ecc={
            (CORR, VOL): total("volatile", "_correctable"),
            (UNC, VOL): total("volatile", "uncorrectable") + total("volatile", "_parity"),
            (CORR, AGG): total("aggregate", "_correctable"),
            (UNC, AGG): total("aggregate", "uncorrectable"),
        },
        remapped_rows=(
            int(rows.findtext("remapped_row_corr") or 0),
            int(rows.findtext("remapped_row_unc") or 0),
            int(rows.findtext("remapped_row_pending") == "Yes"),
            int(rows.findtext("remapped_row_failure") == "Yes"),
        ),
        # H100 remaps rows; NVML answers NotSupported for page retirement ("N/A" in -q).
        retired_pages_pending=None,
        clock_events=pynvml.nvmlClocksEventReasonGpuIdle if active == {"gpu_idle"} else None,
        power_limit_mw=int(float(limit.split()[0]) * 1000),
    )


def test_the_recorded_h100_is_healthy(fake_nvml: FakeNvml, health_nvml: HealthNvml) -> None:
    fake_nvml.add_gpu("NVIDIA H100 80GB HBM3", H100_UUID, temperature=51, power_mw=80_840)
    health_nvml.cards[0] = _h100_card()

    (reading,) = read_nvml()
    health = assess(reading.health, temperature_c=51, power_w=reading.power_w)

    assert reading.health is not None
    assert reading.health.ecc_uncorrected_volatile == 0
    assert reading.health.remapped_rows_failed is False
    assert reading.health.clock_events == ("gpu_idle",)
    assert reading.health.power_limit_w == 700.0
    assert (health.state, health.reasons, health.cordon) == (HealthState.HEALTHY, (), ())


def test_a_card_that_answers_not_supported_is_unknown_never_healthy(
    fake_nvml: FakeNvml, health_nvml: HealthNvml
) -> None:
    fake_nvml.add_reference_box()  # no CardHealth: every health call is NotSupported

    first, _ = read_nvml()
    health = assess(first.health, temperature_c=first.temperature_c)

    assert health.state is HealthState.UNKNOWN
    assert health.reasons == (
        "The GPU does not report its memory errors (ECC, retired pages, row remapping: "
        "not supported), so its health is unknown.",
    )


@pytest.mark.django_db
def test_an_uncorrected_ecc_count_rising_cordons_the_gpu(
    fake_nvml: FakeNvml, health_nvml: HealthNvml, settings: object
) -> None:
    settings.GPUCONFIG_SIMULATED_GPUS = None  # type: ignore[attr-defined]
    fake_nvml.add_gpu("NVIDIA H100 80GB HBM3", H100_UUID)
    health_nvml.cards[0] = CardHealth.clean()
    gpu_inventory_rescan()
    assert gpu_sample(max_age_s=0).health[H100_UUID].state is HealthState.HEALTHY
    assert not GpuDevice.objects.get(gpu_index=0).maintenance

    assert health_nvml.cards[0].ecc is not None
    health_nvml.cards[0].ecc[(UNC, VOL)] = 2
    health_nvml.cards[0].ecc[(UNC, AGG)] = 2
    sample = gpu_sample(max_age_s=0)

    assert sample.health[H100_UUID].state is HealthState.CRITICAL
    device = GpuDevice.objects.get(gpu_index=0)
    assert device.maintenance and device.maintenance_automatic
    assert device.maintenance_by == "GPU Config (health check)"
    assert device.maintenance_reason == (
        "Cordoned automatically: 2 uncorrected ECC errors since the driver loaded: the "
        "GPU's memory cannot be trusted until it is reset."
    )


def _wait_for(condition: object, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.mark.django_db
def test_an_xid_79_event_cordons_the_gpu_and_the_api_says_so(
    fake_nvml: FakeNvml, health_nvml: HealthNvml, settings: object
) -> None:
    settings.GPUCONFIG_SIMULATED_GPUS = None  # type: ignore[attr-defined]
    fake_nvml.add_reference_box()
    health_nvml.cards[0] = CardHealth.clean()
    health_nvml.cards[1] = CardHealth.clean()
    gpu_inventory_rescan()  # starts the watcher: the first NVML sample of this process
    assert health_nvml.registered == [0, 1]

    health_nvml.xid(1, 79)
    _wait_for(lambda: health_nvml.events.empty() and health_nvml.wait_calls > 1)
    reset_sampler()
    client = APIClient()
    client.force_authenticate(User.objects.create_user("viewer"))
    body = client.get("/api/system/gpus").json()

    a400 = body["gpus"][1]
    assert a400["health"]["state"] == "critical"
    assert a400["health"]["reasons"] == [
        "Xid 79 (GPU has fallen off the bus): the GPU is lost or must be reset."
    ]
    assert a400["maintenance"]["active"] is True
    assert a400["maintenance"]["reason"] == (
        "Cordoned automatically: Xid 79 (GPU has fallen off the bus): the GPU is lost or "
        "must be reset."
    )
    assert body["gpus"][0]["health"]["state"] == "healthy"
    assert body["gpus"][0]["maintenance"]["active"] is False


@pytest.mark.django_db
def test_an_application_xid_is_reported_but_does_not_cordon(
    fake_nvml: FakeNvml, health_nvml: HealthNvml, settings: object
) -> None:
    settings.GPUCONFIG_SIMULATED_GPUS = None  # type: ignore[attr-defined]
    fake_nvml.add_gpu("NVIDIA H100 80GB HBM3", H100_UUID)
    health_nvml.cards[0] = CardHealth.clean()
    gpu_inventory_rescan()

    health_nvml.xid(0, 13)
    _wait_for(lambda: health_nvml.events.empty() and health_nvml.wait_calls > 1)
    health = gpu_sample(max_age_s=0).health[H100_UUID]

    assert health.state is HealthState.WARNING
    assert health.reasons == (
        "Xid 13 (graphics engine exception): caused by an application; the GPU stays in use.",
    )
    assert not GpuDevice.objects.get(gpu_index=0).maintenance


def test_warnings_from_clocks_temperature_power_and_pending_remaps() -> None:
    readings = HealthReadings(
        ecc_uncorrected_volatile=0,
        remapped_rows_pending=True,
        clock_events=("sw_power_cap", "hw_thermal_slowdown"),
        slowdown_temperature_c=87,
        power_limit_w=300.0,
    )

    health = assess(readings, temperature_c=84, power_w=300.4)

    assert health.state is HealthState.WARNING
    assert health.cordon == ()
    assert health.reasons == (
        "A row remap is pending: reset the GPU to complete it.",
        "Clocks are slowed by hardware thermal slowdown.",
        "Temperature 84 °C is within 5 °C of the slowdown threshold (87 °C).",
        "Power draw 300 W is at its limit (300 W).",
    )


def test_a_row_remap_failure_is_critical() -> None:
    health = assess(HealthReadings(remapped_rows_failed=True, ecc_uncorrected_volatile=0))

    assert health.state is HealthState.CRITICAL
    assert health.cordon == (
        "Row remapping failed: the GPU's memory has a defect it can no longer repair; "
        "service or replace the GPU.",
    )


_SMI_HEALTH = """#!{python}
import sys
query = next(a for a in sys.argv[1:] if a.startswith("--query-gpu="))
if query.startswith("--query-gpu=uuid,ecc"):
    if "clocks_event_reasons.active" in query:
        print('Field "clocks_event_reasons.active" is not a valid field to query.')
        sys.exit(2)
    print("{uuid}, 0, 3, 0, 3, No, 300.00")
else:
    print("0, {uuid}, NVIDIA H100 80GB HBM3, 81559, 0, 9.0, 0, 51, 80.84")
"""


def test_nvidia_smi_fallback_reads_ecc_and_drops_a_field_the_driver_rejects(
    bin_dir: Path,
) -> None:
    import sys

    script = bin_dir / "nvidia-smi"
    script.write_text(_SMI_HEALTH.format(python=sys.executable, uuid=H100_UUID))
    script.chmod(0o755)

    (reading,) = detect_nvidia_smi(with_processes=False).gpus
    health = assess(reading.health, power_w=reading.power_w)

    assert reading.health is not None
    assert reading.health.clock_events is None  # rejected by this driver: not read
    assert health.state is HealthState.CRITICAL
    assert health.cordon == (
        "3 uncorrected ECC errors since the driver loaded: the GPU's memory cannot be "
        "trusted until it is reset.",
    )


def test_a_simulated_gpu_can_carry_health_for_a_warning_card(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    path.write_text(
        json.dumps(
            {
                "gpus": [
                    {
                        "index": 0,
                        "name": "NVIDIA RTX A5500",
                        "vram_total_mb": 24564,
                        "vram_used_mb": 100,
                        "compute_capability": "8.6",
                        "temperature_c": 85,
                        "health": {
                            "ecc_uncorrected_volatile": 0,
                            "slowdown_temperature_c": 88,
                            "xids": [31],
                        },
                    }
                ]
            }
        )
    )

    (reading,) = read_simulated(path)
    health = assess(reading.health, temperature_c=reading.temperature_c)

    assert health.state is HealthState.WARNING
    assert health.reasons == (
        "Temperature 85 °C is within 5 °C of the slowdown threshold (88 °C).",
        "Xid 31 (GPU memory page fault): caused by an application; the GPU stays in use.",
    )


def test_a_gpus_api_health_object_replays_as_a_simulated_file(tmp_path: Path) -> None:
    verdict = assess(HealthReadings(ecc_uncorrected_volatile=0, xids=(13,)))
    path = tmp_path / "gpus.json"
    path.write_text(
        json.dumps(
            {
                "gpus": [
                    {
                        "index": 0,
                        "name": "NVIDIA H100 80GB HBM3",
                        "vram_total_mb": 81559,
                        "vram_used_mb": 0,
                        "compute_capability": "9.0",
                        "health": verdict.as_api_dict(),
                    }
                ]
            }
        )
    )

    (reading,) = read_simulated(path)

    assert reading.health == verdict.readings
    assert assess(reading.health) == verdict
