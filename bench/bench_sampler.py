"""Benchmark the GPU sampler with per-process attribution: 60 services on 8 GPUs.

Run: .venv/bin/python -m bench.bench_sampler

Side by side in one run, alternating rounds so both see the same machine load:

* **without attribution**: the sampler as it was (GPU readings only);
* **with attribution**: the same readings plus both process lists per GPU in the same NVML
  session, each PID traced through ``/proc/<pid>/cgroup`` to its container, and the stored
  peaks checked.

NVML is faked at its function boundary (``devices/tests/conftest.py``'s ``FakeNvml``: no GPU
here), so the figures are this code's own cost above the driver; the recorded H100 took 16 ms
for one ``read_nvml()`` (init, read, shutdown), which a real host adds to both variants. The
/proc tree is a folder of real cgroup files in the podman layout; ``podman ps`` is replaced
by an in-memory list because the sampler asks it only for containers it has not seen (once
per new container, not per sample); one real ``podman ps`` is timed apart when podman is
installed. The sampler runs at most once per GPUCONFIG_SAMPLE_SECONDS (1 s), so the cost of
one sample is its cost per second.

It runs on a throwaway SQLite database in a temporary folder (DATABASE_URL is overridden).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.standalone import standalone_django

ROOT = Path(__file__).resolve().parent.parent
_TMP = standalone_django("gpuconfig-bench-sampler-")

import pytest  # noqa: E402  (its MonkeyPatch installs the fake NVML, as in the tests)
from django.conf import settings  # noqa: E402  (configured by standalone_django above)
from django.core.management import call_command  # noqa: E402

from bench.inputs import compose_with  # noqa: E402
from devices import detection, services  # noqa: E402
from devices.attribution import HOST_PID_NAMESPACE, ContainerLabels, ProcessAttributor  # noqa: E402
from devices.tests.conftest import FakeNvml  # noqa: E402

SERVICES = 60
GPUS = 8
ROUNDS = 7
SAMPLES_PER_ROUND = 200
MIB = 1024**2
FIRST_PID = 20_000


def _container_id(i: int) -> str:
    return f"{i + 1:064x}"


def build_world() -> tuple[FakeNvml, Path, list[ContainerLabels]]:
    """8 H100-sized GPUs, 60 service processes spread over them, one host process per GPU."""
    compose = _TMP / "project" / "docker-compose.prod.yml"
    compose.parent.mkdir(parents=True)
    compose.write_text(compose_with(SERVICES))
    settings.GPUCONFIG_COMPOSE_FILE = compose
    settings.GPUCONFIG_SIMULATED_GPUS = None
    project = settings.GPUCONFIG_COMPOSE_PROJECT

    fake = FakeNvml()
    for g in range(GPUS):
        fake.add_gpu(
            "NVIDIA H100 80GB HBM3",
            f"GPU-{g:08x}-0000-0000-0000-000000000000",
            total_mib=81559,
            used_mib=20_000,
            reserved_mib=480,
            capability=(9, 0),
        )
    proc = _TMP / "proc"
    (proc / "self" / "ns").mkdir(parents=True)
    os.symlink(HOST_PID_NAMESPACE, proc / "self" / "ns" / "pid")
    containers = []
    for i in range(SERVICES):
        pid = FIRST_PID + i
        fake.gpus[i % GPUS].compute_processes.append((pid, (200 + 37 * i) * MIB))
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "cgroup").write_text(
            f"4:memory:/libpod_parent/libpod-{_container_id(i)}\n"
            f"0::/libpod_parent/libpod-{_container_id(i)}\n"
        )
        containers.append(
            ContainerLabels(_container_id(i), f"{project}_svc-{i:02d}_1", project, f"svc-{i:02d}")
        )
    for g in range(GPUS):  # a display server or a notebook on every GPU: outside GPU Config
        pid = FIRST_PID + 1000 + g
        fake.gpus[g].graphics_processes.append((pid, 64 * MIB))
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "cgroup").write_text("0::/user.slice/session-1.scope\n")
    return fake, proc, containers


def time_samples(take: Callable[[], object], count: int) -> float:
    """Median seconds per sample over ``count`` samples."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        take()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def real_podman_ps_seconds() -> float | None:
    if shutil.which("podman") is None:
        return None
    started = time.perf_counter()
    subprocess.run(
        ["podman", "ps", "--all", "--no-trunc", "--format", "json"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return time.perf_counter() - started


def main() -> int:
    call_command("migrate", verbosity=0)
    fake, proc, containers = build_world()
    monkeypatch = pytest.MonkeyPatch()
    fake.install(monkeypatch)

    def lister() -> list[ContainerLabels]:
        return containers

    attributor = ProcessAttributor(proc_root=proc, list_containers=lister)
    services._sampler.attributor = attributor

    def detect_readings_only() -> detection.Detection:
        return detection.detect(None, with_processes=False)

    def without_attribution() -> object:
        # The same sampler code, with detection as it was before processes were read.
        real = services._run_detection
        services._run_detection = detect_readings_only  # type: ignore[assignment]
        try:
            return services._take_sample(None)
        finally:
            services._run_detection = real  # type: ignore[assignment]

    def with_attribution() -> object:
        return services._take_sample(None)

    first = with_attribution()  # stores the 60 peaks and learns the 60 containers once
    assert isinstance(first, services.Sample) and first.processes is not None
    assert sum(1 for p in first.processes if p.container is not None) == SERVICES

    base: list[float] = []
    attributed: list[float] = []
    for _ in range(ROUNDS):
        base.append(time_samples(without_attribution, SAMPLES_PER_ROUND))
        attributed.append(time_samples(with_attribution, SAMPLES_PER_ROUND))
    monkeypatch.undo()

    b, a = statistics.median(base), statistics.median(attributed)
    period = settings.GPUCONFIG_SAMPLE_SECONDS
    print(
        f"Sampler, {SERVICES} services on {GPUS} GPUs, fake NVML boundary "
        f"({ROUNDS} alternating rounds x {SAMPLES_PER_ROUND} samples, medians), "
        f"one sample per {period:g} s:"
    )
    print(f"{'':24}{'per sample':>12}{'CPU per second':>16}{'ratio':>8}")
    for label, value in (("without attribution", b), ("with attribution", a)):
        print(f"{label:24}{value * 1e3:>9.3f} ms{value / period * 100:>14.3f} %{value / b:>7.2f}x")
    print(
        f"podman ps calls: {attributor.podman_calls} for {len(base) * SAMPLES_PER_ROUND + 1} "
        "attributed samples (containers are learned once)"
    )
    podman_s = real_podman_ps_seconds()
    if podman_s is not None:
        print(
            f"one real `podman ps --all` (paid once per unseen container): {podman_s * 1e3:.0f} ms"
        )
    else:
        print("podman not installed: the one-off `podman ps` was not timed")
    print(
        "The real driver adds its own time to both (one read_nvml() took 16 ms on the "
        "recorded H100)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
