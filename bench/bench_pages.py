"""Benchmark the Settings page: SQL queries per request at 5 and 60 services, and GPU detection
calls per poll of the GPU cards.

Run: .venv/bin/python -m bench.bench_pages   (exits non-zero when a target fails)

It runs on a throwaway SQLite database in a temporary folder (DATABASE_URL is overridden),
with the simulated reference GPUs, through Django's test client. Targets: every request takes
the same number of queries at 5 and at 60 services, and polling the GPU cards runs detection
(NVML) only when the shared sample is older than GPUCONFIG_SAMPLE_SECONDS, never per request.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_TMP = Path(tempfile.mkdtemp(prefix="gpuconfig-bench-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
os.environ["DATABASE_URL"] = f"sqlite:///{_TMP / 'bench.sqlite3'}"
os.environ["GPUCONFIG_DATA_DIR"] = str(_TMP / "data")
os.environ["DJANGO_SECRET_KEY"] = "bench-only-" + "x" * 50  # nothing here outlives the run
os.environ["GPUCONFIG_SIMULATED_GPUS"] = str(ROOT / "devices" / "simulated" / "reference-gpus.json")
os.environ.setdefault("GPUCONFIG_LOG_LEVEL", "WARNING")

import django  # noqa: E402  (settings come from the environment set just above)

django.setup()

from django.conf import settings  # noqa: E402

from common.data_dir import needs_of  # noqa: E402
from common.data_dir import prepare as prepare_data_dir  # noqa: E402

# As bin/run's `manage.py prepare_data_dir`: the SQLite file and the broker's folders.
prepare_data_dir(needs_of(settings))

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402

from bench.inputs import compose_with  # noqa: E402
from devices.services import _sampler, gpu_inventory_rescan, reset_sampler  # noqa: E402
from gpuconfig.domain import StrategyName  # noqa: E402
from gpuconfig.models import ConfigVersion  # noqa: E402
from gpuconfig.services import gpu_config_save  # noqa: E402
from orchestration.models import ApplyRun, RunStatus, ServiceStep, StepStatus  # noqa: E402
from pages.views import GPU_FRAGMENTS  # noqa: E402

URL = "/settings/gpu/"
HX = {"HX-Request": "true"}
SIZES = (5, 60)
POLLS = 200


def prepare(count: int) -> int:
    """Point the app at ``count`` services, save a version and record a finished apply."""
    compose = _TMP / f"compose-{count}" / "docker-compose.prod.yml"
    compose.parent.mkdir(exist_ok=True)
    compose.write_text(compose_with(count))
    settings.GPUCONFIG_COMPOSE_FILE = compose
    settings.GPUCONFIG_OUTPUT_DIR = compose.parent / "config"
    version = gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED).version
    run = ApplyRun.objects.create(version=version, status=RunStatus.SUCCEEDED)
    ServiceStep.objects.bulk_create(
        ServiceStep(run=run, service_name=f"svc-{i:02d}", status=StepStatus.HEALTHY)
        for i in range(count)
    )
    return version.number


def requests(client: Client, version: int) -> dict[str, Callable[[], Any]]:
    first = ConfigVersion.objects.order_by("number").values_list("number", flat=True).first()
    out: dict[str, Callable[[], Any]] = {"full page": lambda: client.get(URL)}
    for part in GPU_FRAGMENTS:
        out[f"fragment {part}"] = functools.partial(
            client.get, URL, {"part": part, "compare": str(first)}, headers=HX
        )
    out["POST revalidate"] = lambda: client.post(
        URL,
        {"strategy": "balanced", "table_strategy": "vram_based", "version": str(version)},
        headers=HX,
    )
    return out


def measure(client: Client, count: int) -> dict[str, tuple[int, float]]:
    version = prepare(count)
    results = {}
    for name, request in requests(client, version).items():
        request()  # warm: registry parse, GPU sample
        with CaptureQueriesContext(connection) as queries:
            start = time.perf_counter()
            response = request()
            elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise SystemExit(f"{name} at {count} services answered {response.status_code}")
        results[name] = (len(queries), elapsed * 1000)
    return results


def poll_detections(client: Client) -> tuple[int, float]:
    reset_sampler()
    client.get(URL, {"part": "gpu-cards"}, headers=HX)  # the first poll takes the sample
    before = _sampler.detections
    start = time.perf_counter()
    for _ in range(POLLS):
        client.get(URL, {"part": "gpu-cards"}, headers=HX)
    return _sampler.detections - before, time.perf_counter() - start


def main() -> int:
    setup_test_environment()
    call_command("migrate", verbosity=0)
    gpu_inventory_rescan()
    user = User.objects.create_user("bench", is_staff=True)  # force_login: no password
    client = Client()
    client.force_login(user)

    print("GPU Config settings page: SQL queries per request (throwaway SQLite database)")
    measured = {count: measure(client, count) for count in SIZES}
    header = f"{'request':<28}" + "".join(f"{f'{n} services':>24}" for n in SIZES)
    print(header)
    failures = []
    for name in measured[SIZES[0]]:
        cells = "".join(
            f"{f'{measured[n][name][0]} queries {measured[n][name][1]:6.1f} ms':>24}" for n in SIZES
        )
        print(f"{name:<28}{cells}")
        counts = {measured[n][name][0] for n in SIZES}
        if len(counts) != 1:
            failures.append(f"{name}: {sorted(counts)} queries")

    detections, elapsed = poll_detections(client)
    sample_s = settings.GPUCONFIG_SAMPLE_SECONDS
    print()
    print(
        f"GPU card polls: {POLLS} requests in {elapsed:.2f} s ran detection {detections} time(s): "
        f"{detections / POLLS:.3f} NVML/detection calls per poll"
    )
    print(
        f"  (the shared sample is refreshed at most once per {sample_s:g} s per process, "
        f"however many clients poll: at most {int(elapsed / sample_s) + 1} here)"
    )
    if detections > int(elapsed / sample_s) + 1:
        failures.append(f"{detections} detections in {elapsed:.2f} s of polling")
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print("OK: same query count at 5 and 60 services for every request; no detection per poll")
    return 0


if __name__ == "__main__":
    sys.exit(main())
