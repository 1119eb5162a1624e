"""Benchmark the sampler's cost with the health reads on: 8 GPUs, one sample a second.

Run: .venv/bin/python -m bench.bench_health

Side by side in one run, alternating rounds so both see the same machine load:

* **health off**: the sampler with ``read_nvml_health`` replaced by "nothing reported" (the
  sampler as it was before issue 21: readings, process lists, attribution, peaks);
* **health on**: the same plus, per GPU, the ECC counters (4), remapped rows, retired pages
  (2 causes), pending retirement, clock-event reasons, slowdown threshold and power limit
  read in the same NVML session, every GPU judged (``health.assess``), the automatic cordon
  checked; and the Xid watcher's daemon thread waiting on its event set all along.

CPU time (``time.process_time``: every thread of the process, the watcher's included) per
sample, and as a share of one core at one sample per second. Then the watcher alone: the CPU
the process spends over a few idle seconds while only the watcher runs. NVML is faked at its
function boundary (no GPU here), so the figures are this code's own cost above the driver;
the driver's own time for the extra calls is not in them (the recorded H100 took 16 ms of
wall time for a whole ``read_nvml()`` session, most of it nvmlInit).

Target: the health reads add below 1% of a core at one sample a second on 8 GPUs.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from bench.standalone import standalone_django

ROOT = Path(__file__).resolve().parent.parent
_TMP = standalone_django("gpuconfig-bench-health-")

import pytest  # noqa: E402  (its MonkeyPatch installs the fake NVML, as in the tests)
from django.conf import settings  # noqa: E402  (configured by standalone_django above)
from django.core.management import call_command  # noqa: E402

from devices import gpu_health, services  # noqa: E402
from devices.detection import nvml, nvml_health  # noqa: E402
from devices.detection.health import HealthReadings, HealthState  # noqa: E402
from devices.tests.conftest import FakeNvml  # noqa: E402
from devices.tests.nvml_health_fake import CardHealth, HealthNvml  # noqa: E402

GPUS = 8
ROUNDS = 7
SAMPLES_PER_ROUND = 100
WATCH_SECONDS = 3.0
TARGET_PERCENT = 1.0


def build_world(monkeypatch: pytest.MonkeyPatch) -> HealthNvml:
    """8 H100s with ECC on and every health counter supported: the most calls per sample."""
    fake = FakeNvml()
    for g in range(GPUS):
        fake.add_gpu(
            "NVIDIA H100 80GB HBM3",
            f"GPU-{g:08x}-0000-0000-0000-000000000000",
            total_mib=81559,
            used_mib=20_000,
            reserved_mib=480,
            capability=(9, 0),
            compute_processes=[(30_000 + g, 8_000 * 1024**2)],
        )
    fake.install(monkeypatch)
    health = HealthNvml(fake)
    for g in range(GPUS):
        health.cards[g] = CardHealth.clean(retired_pages={0: [], 1: []})
    health.install(monkeypatch)
    return health


def cpu_per_sample(count: int) -> float:
    """CPU seconds (all threads) per sample, over ``count`` samples timed together: the
    process clock ticks too coarsely on some machines to time one sample alone."""
    started = time.process_time()
    for _ in range(count):
        services._take_sample(None)
    return (time.process_time() - started) / count


def main() -> int:
    call_command("migrate", verbosity=0)
    settings.GPUCONFIG_SIMULATED_GPUS = None
    monkeypatch = pytest.MonkeyPatch()
    health = build_world(monkeypatch)
    call_command("detect_gpus", stdout=open(os.devnull, "w"))  # noqa: SIM115 - the rows exist
    # The name the NVML source calls, replaced in its module (as a monkeypatch would).
    real_read = nvml_health.read_nvml_health

    def health_on() -> None:
        setattr(nvml, "read_nvml_health", real_read)  # noqa: B010

    def health_off() -> None:
        setattr(nvml, "read_nvml_health", lambda handle: HealthReadings())  # noqa: B010

    health_on()
    first = services._take_sample(None)
    assert all(h.state is HealthState.HEALTHY for h in first.health.values()), first.health
    watcher = gpu_health._state.watcher
    assert watcher is not None and watcher.running, "the Xid watcher runs beside the sampler"
    assert len(health.registered) == GPUS

    off: list[float] = []
    on: list[float] = []
    for _ in range(ROUNDS):
        health_off()
        off.append(cpu_per_sample(SAMPLES_PER_ROUND))
        health_on()
        on.append(cpu_per_sample(SAMPLES_PER_ROUND))

    # The watcher alone: nothing else runs in this process for a few seconds.
    waits_before = health.wait_calls
    started_cpu, started_wall = time.process_time(), time.monotonic()
    time.sleep(WATCH_SECONDS)
    watcher_cpu = time.process_time() - started_cpu
    watched = time.monotonic() - started_wall
    waits = health.wait_calls - waits_before
    gpu_health.reset_health_state()
    monkeypatch.undo()

    o, n = statistics.median(off), statistics.median(on)
    period = settings.GPUCONFIG_SAMPLE_SECONDS
    added = (n - o) / period * 100
    watcher_percent = watcher_cpu / watched * 100
    print(
        f"Sampler on {GPUS} GPUs, fake NVML boundary ({ROUNDS} alternating rounds x "
        f"{SAMPLES_PER_ROUND} samples, CPU time of all threads, median round), one sample per "
        f"{period:g} s:"
    )
    print(f"{'':14}{'CPU per sample':>16}{'% of a core':>14}{'ratio':>8}")
    for label, value in (("health off", o), ("health on", n)):
        print(f"{label:14}{value * 1e3:>13.3f} ms{value / period * 100:>13.3f} %{value / o:>7.2f}x")
    print(f"health reads add {added:.3f} % of a core (target < {TARGET_PERCENT:g} %)")
    print(
        f"Xid watcher alone: {watcher_percent:.3f} % of a core over {watched:.1f} s "
        f"({waits} waits of {nvml_wait_ms()} ms)"
    )
    total = n / period * 100 + watcher_percent
    verdict = "PASS" if added + watcher_percent < TARGET_PERCENT else "FAIL"
    print(
        f"{verdict}: health reads + watcher = {added + watcher_percent:.3f} % of a core "
        f"(the whole sampler with health: {total:.3f} %)"
    )
    return 0 if verdict == "PASS" else 1


def nvml_wait_ms() -> int:
    from devices.detection.xid_events import WAIT_TIMEOUT_MS

    return WAIT_TIMEOUT_MS


if __name__ == "__main__":
    sys.exit(main())
