"""What ``/metrics`` says, collected at scrape time from shared state (Prometheus text format).

Under gunicorn every worker is its own process: a counter kept in one worker's memory would
answer differently depending on which worker a scrape reaches. So nothing here counts in
memory: GPU readings come from the shared sample (one detection per second per process,
the same GPUs for all), maintenance, apply runs and the saved plan from the database, and
the planner's times from the cache (Redis in production: one set of counters for every
web worker and the Celery worker; per process only with the embedded local-memory cache).

GPU metrics carry dcgm-exporter's label names (``gpu``, ``UUID``, ``modelName``,
``Hostname``) so that a query can join them with DCGM_FI_* series; per-service ones carry
``service``, ``container`` and ``UUID``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Iterator
from typing import Final

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from devices.attribution import Owner
from devices.detection.health import HealthState
from devices.maintenance import gpu_maintenance_states
from devices.services import Sample, gpu_sample
from gpuconfig import selectors as config_selectors
from gpuconfig.domain import Configuration, StrategyName
from gpuconfig.registry import RegistryError, load_registry
from gpuconfig.strategies.cordon import PLAN_TIMERS
from orchestration.models import ApplyRun, RunKind, RunStatus

logger = logging.getLogger(__name__)

MIB: Final = 1024**2
GPU_LABELS: Final = ("gpu", "UUID", "modelName", "Hostname")
RUN_BUCKETS_S: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
PLANNER_BUCKETS_S: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_PLANNER_KEY: Final = "gpuconfig:metrics:planner"
# Cache entries of the planner's histogram never expire: they are counters.
_FOREVER: Final = None


def _gpu_labels(sample: Sample) -> dict[str, list[str]]:
    host = socket.gethostname()
    return {r.uuid: [str(r.index), r.uuid, r.name, host] for r in sample.readings}


def gpu_metrics(sample: Sample) -> Iterator[Metric]:
    """Per GPU: memory, utilization, temperature, power, health and maintenance."""
    labels = _gpu_labels(sample)
    families = {
        "total": GaugeMetricFamily(
            "gpuconfig_gpu_memory_total_bytes", "GPU memory in total.", labels=GPU_LABELS
        ),
        "used": GaugeMetricFamily(
            "gpuconfig_gpu_memory_used_bytes",
            "GPU memory used by processes (the driver's reserve not included).",
            labels=GPU_LABELS,
        ),
        "reserved": GaugeMetricFamily(
            "gpuconfig_gpu_memory_reserved_bytes",
            "GPU memory the driver keeps for itself (NVML memory info v2).",
            labels=GPU_LABELS,
        ),
        "util": GaugeMetricFamily(
            "gpuconfig_gpu_utilization_percent", "GPU utilization.", labels=GPU_LABELS
        ),
        "temp": GaugeMetricFamily(
            "gpuconfig_gpu_temperature_celsius", "GPU temperature.", labels=GPU_LABELS
        ),
        "power": GaugeMetricFamily(
            "gpuconfig_gpu_power_watts", "GPU power draw.", labels=GPU_LABELS
        ),
    }
    health = GaugeMetricFamily(
        "gpuconfig_gpu_health",
        "1 for the GPU's health state now (healthy, warning, critical, unknown), 0 for the others.",
        labels=(*GPU_LABELS, "state"),
    )
    maintenance = GaugeMetricFamily(
        "gpuconfig_gpu_in_maintenance",
        "1 when the GPU is in maintenance (takes no new services).",
        labels=GPU_LABELS,
    )
    states = {s.uuid: s for s in gpu_maintenance_states().values()}
    for reading in sample.readings:
        gpu = labels[reading.uuid]
        for key, value in (
            ("total", reading.vram_total_mb),
            ("used", reading.vram_used_mb),
            ("reserved", reading.vram_reserved_mb),
        ):
            if value is not None:
                families[key].add_metric(gpu, value * MIB)
        for key, number in (
            ("util", reading.utilization_percent),
            ("temp", reading.temperature_c),
            ("power", reading.power_w),
        ):
            if number is not None:
                families[key].add_metric(gpu, float(number))
        verdict = sample.health.get(reading.uuid)
        now = verdict.state if verdict is not None else HealthState.UNKNOWN
        for state in HealthState:
            health.add_metric([*gpu, state.value], 1.0 if state is now else 0.0)
        held = states.get(reading.uuid)
        maintenance.add_metric(gpu, 1.0 if held is not None and held.active else 0.0)
    yield from families.values()
    yield health
    yield maintenance


def service_metrics(sample: Sample) -> Iterator[Metric]:
    """Per managed service: VRAM measured per container and GPU, its estimate, its planned GPU."""
    project = settings.GPUCONFIG_COMPOSE_PROJECT
    measured = GaugeMetricFamily(
        "gpuconfig_service_vram_used_bytes",
        "GPU memory the service's container holds on a GPU (measured, all its processes).",
        labels=("service", "container", "UUID"),
    )
    held: dict[tuple[str, str, str], int] = {}
    for item in sample.processes or ():
        labels = item.container
        if item.owner is not Owner.CONTAINER or labels is None or labels.project != project:
            continue
        if not labels.service or item.process.used_mb is None:
            continue
        key = (labels.service, labels.name, item.process.gpu_uuid)
        held[key] = held.get(key, 0) + item.process.used_mb
    for key, mb in sorted(held.items()):
        measured.add_metric(list(key), mb * MIB)
    yield measured

    estimate = GaugeMetricFamily(
        "gpuconfig_service_vram_estimate_bytes",
        "The service's VRAM estimate (its gpuconfig.vram_estimate_mb label).",
        labels=("service",),
    )
    try:
        registry = load_registry(settings.GPUCONFIG_COMPOSE_FILE)
    except RegistryError as exc:
        logger.warning("metrics: the compose file cannot be read: %s", exc)
    else:
        for service in registry.services:
            estimate.add_metric([service.name], service.vram_estimate_mb * MIB)
    yield estimate

    planned = GaugeMetricFamily(
        "gpuconfig_service_planned_gpu_info",
        "1 for the GPU the saved configuration plans the service on.",
        labels=("service", "gpu", "UUID"),
    )
    version = config_selectors.latest_version()
    if version is not None:
        for entry in Configuration.from_json(version.assignments).assignments:
            if entry.enabled and entry.gpu_index is not None:
                planned.add_metric([entry.service, str(entry.gpu_index), entry.gpu_uuid or ""], 1.0)
    yield planned


def _histogram(
    name: str, documentation: str, buckets: Iterable[float], values: list[float]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    edges = list(buckets)
    counts = [(str(edge), sum(1 for v in values if v <= edge)) for edge in edges]
    counts.append(("+Inf", len(values)))
    family.add_metric([], buckets=counts, sum_value=sum(values))
    return family


def run_metrics() -> Iterator[Metric]:
    """Apply runs by result, their duration, rollbacks (from the database: every process
    answers the same)."""
    runs = CounterMetricFamily(
        "gpuconfig_apply_runs",
        "Apply and manual-rollback runs that ended, by kind and result.",
        labels=("kind", "result"),
    )
    finished = ApplyRun.objects.exclude(
        status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.ROLLING_BACK]
    )
    for row in finished.values("kind", "status").annotate(n=Count("id")).order_by():
        runs.add_metric([row["kind"], row["status"]], float(row["n"]))
    yield runs

    durations = [
        (end - start).total_seconds()
        for start, end in finished.filter(
            kind=RunKind.APPLY, started_at__isnull=False, finished_at__isnull=False
        ).values_list("started_at", "finished_at")
        if start is not None and end is not None
    ]
    yield _histogram(
        "gpuconfig_apply_run_duration_seconds",
        "How long apply runs took, start to end (rollback included).",
        RUN_BUCKETS_S,
        durations,
    )

    rollbacks = CounterMetricFamily(
        "gpuconfig_apply_rollbacks",
        "Rollbacks: automatic (an apply that failed and was rolled back) and manual.",
        labels=("trigger",),
    )
    automatic = finished.filter(
        kind=RunKind.APPLY, status__in=[RunStatus.ROLLED_BACK, RunStatus.ROLLBACK_FAILED]
    ).count()
    rollbacks.add_metric(["automatic"], float(automatic))
    rollbacks.add_metric(["manual"], float(finished.filter(kind=RunKind.ROLLBACK).count()))
    yield rollbacks


def record_plan_time(strategy: str, seconds: float) -> None:
    """Add one plan's time to the shared histogram (cache counters; see the module)."""
    if strategy not in {s.value for s in StrategyName}:
        return
    keys = [f"{_PLANNER_KEY}:{strategy}:count", f"{_PLANNER_KEY}:{strategy}:sum_us"]
    keys += [
        f"{_PLANNER_KEY}:{strategy}:le:{edge}" for edge in PLANNER_BUCKETS_S if seconds <= edge
    ]
    amounts = {key: 1 for key in keys}
    amounts[f"{_PLANNER_KEY}:{strategy}:sum_us"] = round(seconds * 1_000_000)
    try:
        for key, amount in amounts.items():
            cache.add(key, 0, timeout=_FOREVER)
            cache.incr(key, amount)
    except Exception as exc:
        logger.warning("metrics: could not record the planner's time: %s", exc)


def planner_metrics() -> Iterator[Metric]:
    family = HistogramMetricFamily(
        "gpuconfig_planner_duration_seconds",
        "How long the planner took per plan (preview, save, the page's Recommended mark).",
        labels=("strategy",),
    )
    for strategy in StrategyName:
        prefix = f"{_PLANNER_KEY}:{strategy.value}"
        count = cache.get(f"{prefix}:count")
        if not count:
            continue
        buckets = [
            (str(edge), int(cache.get(f"{prefix}:le:{edge}") or 0)) for edge in PLANNER_BUCKETS_S
        ]
        buckets.append(("+Inf", int(count)))
        total = int(cache.get(f"{prefix}:sum_us") or 0) / 1_000_000
        family.add_metric([strategy.value], buckets=buckets, sum_value=total)
    yield family


class GpuConfigCollector(Collector):
    """Everything /metrics shows, read when it is scraped."""

    def collect(self) -> Iterator[Metric]:
        sample = gpu_sample()
        yield from gpu_metrics(sample)
        yield from service_metrics(sample)
        yield from run_metrics()
        yield from planner_metrics()


def install_plan_timer() -> None:
    """Register the planner recorder once per process (orchestration's AppConfig.ready)."""
    if record_plan_time not in PLAN_TIMERS:
        PLAN_TIMERS.append(record_plan_time)
