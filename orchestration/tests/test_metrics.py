"""/metrics: who may read it, and what it says, parsed with prometheus_client's own parser;
the Grafana dashboard and the alert rules in docs/ use only metrics that exist."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from devices.gpu_health import reset_health_state
from devices.maintenance import gpu_maintenance_start
from devices.services import gpu_inventory_rescan, reset_sampler
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import gpu_config_save
from orchestration.models import ApplyRun, RunKind, RunStatus

pytestmark = pytest.mark.django_db

DOCS = Path(__file__).resolve().parents[2] / "docs"
TOKEN = "s3cret-scrape-token"


@pytest.fixture
def metrics_on(settings: Any, tmp_path: Path) -> None:
    settings.GPUCONFIG_METRICS_TOKEN = TOKEN
    settings.GPUCONFIG_METRICS_ALLOWED_NETWORKS = []
    gpus = json.loads(Path(settings.GPUCONFIG_SIMULATED_GPUS).read_text())
    gpus["gpus"][1]["health"] = {"xids": [79]}  # the A400 fell off the bus
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps(gpus))
    settings.GPUCONFIG_SIMULATED_GPUS = path
    reset_health_state()
    reset_sampler()
    gpu_inventory_rescan()


def _scrape(client: Client, token: str = TOKEN) -> dict[str, list[Sample]]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def _value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    found = [s for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0].value


def test_metrics_are_off_without_a_token_or_network(settings: Any) -> None:
    settings.GPUCONFIG_METRICS_TOKEN = ""
    settings.GPUCONFIG_METRICS_ALLOWED_NETWORKS = []

    assert Client().get("/metrics").status_code == 404


def test_a_wrong_token_is_refused_and_an_allowed_network_needs_none(
    settings: Any, metrics_on: None
) -> None:
    refused = Client().get("/metrics", headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"Metrics need the token" in refused.content
    assert b"gpuconfig_" not in refused.content

    settings.GPUCONFIG_METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]  # the test client's address
    assert Client().get("/metrics").status_code == 200


def test_gpu_metrics_carry_dcgm_labels_health_and_maintenance(metrics_on: None) -> None:
    gpu_maintenance_start(gpu_index=0, reason="Fan", by="ops")

    samples = _scrape(Client())

    a5500 = {
        "gpu": "0",
        "UUID": "GPU-00000000-0000-0000-0000-000000000000",
        "modelName": "NVIDIA RTX A5500",
    }
    assert _value(samples, "gpuconfig_gpu_memory_total_bytes", **a5500) == 24564 * 1024**2
    assert _value(samples, "gpuconfig_gpu_memory_used_bytes", **a5500) == 19304 * 1024**2
    assert _value(samples, "gpuconfig_gpu_utilization_percent", **a5500) == 47
    assert _value(samples, "gpuconfig_gpu_temperature_celsius", **a5500) == 61
    assert _value(samples, "gpuconfig_gpu_power_watts", **a5500) == pytest.approx(142.7)
    assert _value(samples, "gpuconfig_gpu_in_maintenance", **a5500) == 1
    assert all(s.labels["Hostname"] for s in samples["gpuconfig_gpu_memory_total_bytes"])
    assert _value(samples, "gpuconfig_gpu_health", gpu="1", state="critical") == 1
    assert _value(samples, "gpuconfig_gpu_health", gpu="1", state="healthy") == 0
    assert _value(samples, "gpuconfig_gpu_in_maintenance", gpu="1") == 1  # cordoned by Xid 79
    assert _value(samples, "gpuconfig_service_vram_estimate_bytes", service="ai-llm") > 0


def test_apply_runs_by_result_duration_and_rollbacks(metrics_on: None) -> None:
    now = timezone.now()
    version = _version()
    for status, seconds in (
        (RunStatus.SUCCEEDED, 12),
        (RunStatus.SUCCEEDED, 40),
        (RunStatus.ROLLED_BACK, 90),
    ):
        ApplyRun.objects.create(
            version=version,
            status=status,
            started_at=now - timedelta(seconds=seconds),
            finished_at=now,
        )
    ApplyRun.objects.create(
        version=version, kind=RunKind.ROLLBACK, status=RunStatus.SUCCEEDED, finished_at=now
    )

    samples = _scrape(Client())

    assert _value(samples, "gpuconfig_apply_runs_total", kind="apply", result="succeeded") == 2
    assert _value(samples, "gpuconfig_apply_runs_total", kind="apply", result="rolled_back") == 1
    assert _value(samples, "gpuconfig_apply_run_duration_seconds_count") == 3
    assert _value(samples, "gpuconfig_apply_run_duration_seconds_bucket", le="30.0") == 1
    assert _value(samples, "gpuconfig_apply_run_duration_seconds_bucket", le="60.0") == 2
    assert _value(samples, "gpuconfig_apply_run_duration_seconds_sum") == pytest.approx(142)
    assert _value(samples, "gpuconfig_apply_rollbacks_total", trigger="automatic") == 1
    assert _value(samples, "gpuconfig_apply_rollbacks_total", trigger="manual") == 1


def test_the_planners_time_is_counted(metrics_on: None, staff_api: Any) -> None:
    from django.core.cache import cache

    cache.clear()
    for _ in range(3):
        preview = staff_api.get("/api/system/gpu-config/preview", {"strategy": "balanced"})
        assert preview.status_code == 200

    samples = _scrape(Client())

    count = _value(samples, "gpuconfig_planner_duration_seconds_count", strategy="balanced")
    assert count >= 3
    assert _value(samples, "gpuconfig_planner_duration_seconds_sum", strategy="balanced") > 0


def _version() -> ConfigVersion:
    gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED)
    version = ConfigVersion.objects.order_by("-number").first()
    assert version is not None
    return version


def _metric_names_used(text: str) -> set[str]:
    return set(re.findall(r"\bgpuconfig_[a-z_]+\b", text))


def test_the_dashboard_and_the_alert_rules_use_only_metrics_that_exist(
    metrics_on: None, staff_api: Any
) -> None:
    ApplyRun.objects.create(
        version=_version(),
        status=RunStatus.ROLLED_BACK,
        started_at=timezone.now() - timedelta(seconds=5),
        finished_at=timezone.now(),
    )
    response = Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    exposed: set[str] = set()
    for family in text_string_to_metric_families(response.content.decode()):
        # A family is there even with no series now (no service measured on simulated GPUs).
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ("",))
        exposed |= {family.name + suffix for suffix in suffixes}
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    rules = (DOCS / "prometheus-alerts.yml").read_text()

    used = _metric_names_used(json.dumps(dashboard)) | _metric_names_used(rules)

    assert used, "the dashboard and the rules query GPU Config's metrics"
    assert used <= exposed, sorted(used - exposed)
    for alert in ("GpuCritical", "ServiceOverEstimate", "ApplyRolledBack"):
        assert f"alert: {alert}" in rules
