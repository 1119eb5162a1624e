"""Suggested estimates (``gpuconfig.suggested_estimates``): the measured peak of each service
as the label line to write, through ``manage.py suggest_estimates`` and the API.

NVML is faked at its function boundary; the PID -> container step reads a /proc tree written
by ``devices.tests.measured_box``.
"""

from __future__ import annotations

from io import StringIO
from typing import TYPE_CHECKING

import pytest
from django.core.management import call_command

from devices.models import ServiceVramPeak
from devices.tests.conftest import fake_nvml
from devices.tests.measured_box import CLIP_PID, MIB, ZOO_PID, Listing, measured
from gpuconfig.suggested_estimates import suggest

if TYPE_CHECKING:
    from devices.tests.conftest import FakeGpu

__all__ = ["fake_nvml", "measured"]  # the fixtures, used by name

pytestmark = pytest.mark.django_db


def test_suggest_estimates_prints_the_peak_and_the_label_line(
    measured: tuple[FakeGpu, FakeGpu, Listing],
) -> None:
    a5500, a400, _ = measured
    ServiceVramPeak.objects.create(service="ai-enrichment", peak_mb=7420)
    a5500.compute_processes = [(ZOO_PID, 6000 * MIB)]
    a400.compute_processes = [(CLIP_PID, 1234 * MIB)]
    out = StringIO()

    call_command("suggest_estimates", stdout=out)

    text = out.getvalue()
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("ai-")}
    assert lines["ai-clip"].split()[1:4] == ["1,200", "1,234", "1,234"]
    assert lines["ai-clip"].endswith('gpuconfig.vram_estimate_mb: "1300"')
    # The stored peak beats what is measured now.
    assert lines["ai-enrichment"].split()[1:4] == ["6,800", "7,420", "6,000"]
    assert lines["ai-enrichment"].endswith('gpuconfig.vram_estimate_mb: "7500"')
    assert lines["ai-llm"].endswith("(not measured yet)")
    assert 'ai-clip:\n    labels:\n      gpuconfig.vram_estimate_mb: "1300"' in text


def test_suggest_estimates_reset_forgets_the_peaks(
    measured: tuple[FakeGpu, FakeGpu, Listing],
) -> None:
    ServiceVramPeak.objects.create(service="ai-clip", peak_mb=999)
    out = StringIO()

    call_command("suggest_estimates", "--reset", stdout=out)

    assert "Forgot 1 stored peak(s)." in out.getvalue()
    assert not ServiceVramPeak.objects.exists()


def test_suggested_estimates_api(measured: tuple[FakeGpu, FakeGpu, Listing], member_api) -> None:
    _, a400, _ = measured
    a400.compute_processes = [(CLIP_PID, 1150 * MIB)]

    body = member_api.get("/api/system/gpus/suggested-estimates").json()

    by_service = {s["service"]: s for s in body["services"]}
    assert by_service["ai-clip"] == {
        "service": "ai-clip",
        "estimate_mb": 1200,
        "peak_mb": 1150,
        "measured_now_mb": 1150,
        "suggested_mb": 1200,
        "label_line": 'gpuconfig.vram_estimate_mb: "1200"',
        "changes_estimate": False,
    }
    assert by_service["ai-llm"]["suggested_mb"] is None
    assert body["compose_file"].endswith("docker-compose.prod.yml")


def test_anonymous_cannot_read_suggested_estimates(anon_api) -> None:
    assert anon_api.get("/api/system/gpus/suggested-estimates").status_code == 403


@pytest.mark.parametrize(
    ("peak", "suggested"), [(None, None), (1, 100), (8802, 8900), (8800, 8800), (21701, 21800)]
)
def test_suggestion_rounds_the_peak_up_to_100_mb(peak: int | None, suggested: int | None) -> None:
    assert suggest(peak) == suggested
