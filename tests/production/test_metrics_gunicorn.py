"""/metrics under gunicorn with 2 workers: every scrape, whichever worker answers it, parses
with prometheus_client's parser and says the same (nothing is counted in one worker's
memory), and the token is required."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from django.contrib.auth.models import User
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import gpu_config_save
from orchestration.models import ApplyRun, RunStatus
from tests.production.support import (
    REDIS_URL,
    ROOT,
    Browser,
    needs_postgresql,
    production_env,
    running_gunicorn,
)

pytestmark = [needs_postgresql, pytest.mark.django_db(transaction=True)]

TOKEN = "scrape-token-for-the-test"
SCRAPES = 12


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[Browser]:
    # The planner's counters live in the shared cache: start from none.
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter("*gpuconfig:metrics:planner*"):
        client.delete(key)
    env = production_env(
        tmp_path_factory.mktemp("data"),
        GPUCONFIG_METRICS_TOKEN=TOKEN,
        GPUCONFIG_SIMULATED_GPUS=str(ROOT / "devices" / "simulated" / "reference-gpus.json"),
    )
    with running_gunicorn(env, tmp_path_factory.mktemp("logs"), workers=2) as browser:
        yield browser


def _scrape(web: Browser) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = web.get("/metrics", Authorization=f"Bearer {TOKEN}", Connection="close")
    assert response.status == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_every_worker_answers_the_same_metrics(web: Browser) -> None:
    staff_user = User.objects.create_user("operator", password="operator-pass-1", is_staff=True)
    token = Token.objects.create(user=staff_user)  # an API client: no login page needed
    gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED)
    version = ConfigVersion.objects.order_by("-number").first()
    assert version is not None
    now = timezone.now()
    ApplyRun.objects.create(
        version=version,
        status=RunStatus.ROLLED_BACK,
        started_at=now - timedelta(seconds=30),
        finished_at=now,
    )
    for _ in range(4):  # each answered by either worker; each plans once
        preview = web.get(
            "/api/system/gpu-config/preview?strategy=balanced",
            Authorization=f"Token {token.key}",
            Connection="close",
        )
        assert preview.status == 200, preview.text

    scrapes = [_scrape(web) for _ in range(SCRAPES)]

    counters = [
        {
            key: value
            for key, value in scrape.items()
            if key[0].startswith(("gpuconfig_apply_", "gpuconfig_planner_"))
        }
        for scrape in scrapes
    ]
    assert all(c == counters[0] for c in counters), "workers disagree"
    first = scrapes[0]
    planned = first[("gpuconfig_planner_duration_seconds_count", (("strategy", "balanced"),))]
    assert planned >= 4
    rolled_back = (("kind", "apply"), ("result", "rolled_back"))
    assert first[("gpuconfig_apply_runs_total", rolled_back)] == 1
    assert first[("gpuconfig_apply_rollbacks_total", (("trigger", "automatic"),))] == 1
    memory = [k for k in first if k[0] == "gpuconfig_gpu_memory_total_bytes"]
    assert {dict(labels)["gpu"] for _, labels in memory} == {"0", "1"}
    assert {tuple(sorted(dict(labels))) for _, labels in memory} == {
        ("Hostname", "UUID", "gpu", "modelName")
    }


def test_metrics_without_the_token_are_refused(web: Browser) -> None:
    response = web.get("/metrics", Connection="close")

    assert response.status == 401
    assert "Metrics need the token" in response.text
    assert "gpuconfig_" not in response.text
