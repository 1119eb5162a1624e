"""Arbitrary JSON thrown at the write endpoints (issue 12), as a property.

Whatever the body: the answer is a success or a 4xx (never 5xx); a refused save writes
nothing; and the database and config/gpu-assignments.yml always describe the same
configuration. Bodies are both arbitrary JSON and near misses of the real shape (right keys,
wrong values), which reach deeper than random JSON ever would.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from devices.services import gpu_inventory_rescan
from gpuconfig.domain import Configuration
from gpuconfig.models import ConfigVersion, GpuConfiguration

pytestmark = pytest.mark.django_db

URL = "/api/system/gpu-config"
PREVIEW = "/api/system/gpu-config/preview"
SERVICES = ["ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment"]
STRATEGIES = ["manual", "vram_based", "latency_optimized", "isolation_first", "balanced"]
EXAMPLES = 300  # per test: about ten seconds each

# Any JSON value, including the awkward ones: huge and negative numbers, floats that are
# whole, empty and non-ASCII strings, nesting.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
any_json = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
# Near misses: the real keys, each with a plausible or an arbitrary value.
assignment = st.fixed_dictionaries(
    {"service": st.sampled_from(SERVICES) | json_scalars},
    optional={
        "gpu_index": st.sampled_from([0, 1, 2, None, -1, 1023, 1024, True, "1", 1.0]) | any_json,
        "vram_budget_override": st.sampled_from([None, 0.05, 0.1, 3.5, 2000, 2001, True, "3"])
        | any_json,
        "enabled": st.sampled_from([True, False, "yes", 0, None]) | any_json,
    },
)
near_miss = st.fixed_dictionaries(
    {"strategy": st.sampled_from(STRATEGIES) | json_scalars},
    optional={
        "assignments": st.lists(assignment, max_size=6) | any_json,
        "version": st.sampled_from([0, 1, 2, 3, 2**31, 2**63, -1, None, "1"]) | any_json,
    },
)
# Plausible bodies, so that a good share of the examples really save (and the database and
# file are compared after real writes, not only after refusals).
plausible = st.fixed_dictionaries(
    {"strategy": st.sampled_from(STRATEGIES[1:])},
    optional={
        "assignments": st.lists(
            st.fixed_dictionaries(
                {"service": st.sampled_from(SERVICES)},
                optional={
                    "gpu_index": st.sampled_from([0, 1, None]),
                    "vram_budget_override": st.sampled_from([None, 0.5, 3.5, 6.8]),
                    "enabled": st.booleans(),
                },
            ),
            max_size=5,
            unique_by=lambda a: a["service"],
        )
    },
)
bodies = plausible | near_miss | any_json


@pytest.fixture(autouse=True)
def _setup(db: Any, settings: Any) -> None:
    gpu_inventory_rescan()
    settings.GPUCONFIG_API_RATE_USER = ""  # a burst of requests is the point here


def _assignments_file() -> Path:
    return Path(django_settings.GPUCONFIG_OUTPUT_DIR) / "gpu-assignments.yml"


def _stored() -> tuple[int, str | None]:
    path = _assignments_file()
    return ConfigVersion.objects.count(), path.read_text() if path.exists() else None


def _assert_database_and_file_agree() -> None:
    latest = ConfigVersion.objects.order_by("-number").first()
    if latest is None:
        assert not _assignments_file().exists()
        assert not GpuConfiguration.objects.exists()
        return
    document = YAML(typ="safe").load(_assignments_file().read_text())
    assert (document["version"], document["strategy"]) == (latest.number, latest.strategy)
    configuration = Configuration.from_json(latest.assignments)
    rows = {row.service_name: row for row in GpuConfiguration.objects.all()}
    for entry in configuration.assignments:
        row = rows[entry.service]
        assert (row.resolved_gpu_index, row.enabled) == (entry.gpu_index, entry.enabled)
        if entry.enabled and entry.gpu_index is not None:
            assert document["assignments"][entry.service]["gpu"] == entry.gpu_index
        else:
            assert entry.service not in document["assignments"]


def test_any_body_put_answers_success_or_4xx_and_the_files_agree(
    staff_api: Any, capsys: Any
) -> None:
    statuses: Counter[int] = Counter()

    @given(body=bodies)
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def put(body: Any) -> None:
        before = _stored()
        response = staff_api.put(URL, data=json.dumps(body), content_type="application/json")
        statuses[response.status_code] += 1
        assert response.status_code < 500, (body, response.content[:500])
        assert response.json()["success"] is (response.status_code == 200)
        if response.status_code != 200:
            assert _stored() == before, "a refused save wrote something"
        _assert_database_and_file_agree()

    put()
    with capsys.disabled():
        print(f"\nhypothesis PUT {URL}: {sum(statuses.values())} bodies, {dict(statuses)}")
    assert statuses[200] > 0, "some generated bodies must be valid saves"


def test_any_body_preview_answers_success_or_4xx_and_writes_nothing(
    member_api: Any, capsys: Any
) -> None:
    statuses: Counter[int] = Counter()

    @given(body=bodies)
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def preview(body: Any) -> None:
        response = member_api.post(PREVIEW, data=json.dumps(body), content_type="application/json")
        statuses[response.status_code] += 1
        assert response.status_code < 500, (body, response.content[:500])
        assert _stored() == (0, None)

    preview()
    with capsys.disabled():
        print(f"\nhypothesis POST {PREVIEW}: {sum(statuses.values())} bodies, {dict(statuses)}")
    assert statuses[200] > 0
