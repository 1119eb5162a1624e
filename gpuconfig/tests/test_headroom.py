"""Headroom: VRAM still free for new services per GPU, the largest service that could be
added without moving anything, on the page beside the planned VRAM and in the API."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from devices.services import gpu_inventory_rescan, reset_sampler
from gpuconfig.domain import Gpu
from gpuconfig.headroom import headroom


def test_headroom_subtracts_the_plan_and_use_outside_gpu_config() -> None:
    gpus = (
        Gpu(0, "A", 24_000),
        Gpu(1, "B", 16_000),
        Gpu(2, "C", 80_000, cordoned=True),
        Gpu(3, "D", 8_000, present=False),
    )

    room = headroom(gpus, {0: 20_000, 1: 9_000, 2: 1_000}, {0: 1_500, 1: None})

    assert [g.free_mb for g in room.gpus] == [2_500, 7_000, 0, 0]
    assert room.largest_addable_mb == 7_000
    assert room.as_dict()["fragmented_mb"] == 2_500
    assert room.gpus[1].outside_mb is None  # not measured: counted as 0, and said so


def test_a_plan_over_capacity_leaves_no_headroom_not_a_negative_one() -> None:
    room = headroom((Gpu(0, "A", 4_000),), {0: 6_800}, {0: 0})

    assert room.gpus[0].free_mb == 0


@pytest.mark.django_db
def test_the_api_and_the_page_show_the_headroom(staff_api: APIClient, staff_user: Any) -> None:
    reset_sampler()
    gpu_inventory_rescan()
    saved = staff_api.put(
        "/api/system/gpu-config",
        data=json.dumps({"strategy": "vram_based"}),
        content_type="application/json",
    )
    assert saved.status_code == 200
    planned = staff_api.get("/api/system/gpu-config").json()["planned_vram_mb"]

    body = staff_api.get("/api/system/gpus/headroom").json()

    by_index = {g["index"]: g for g in body["gpus"]}
    for index, gpu in by_index.items():
        assert gpu["planned_mb"] == planned[str(index)]
        assert gpu["free_for_new_services_mb"] == max(0, gpu["capacity_mb"] - gpu["planned_mb"])
        assert gpu["outside_gpu_config_mb"] is None  # simulated GPUs: nothing measured
    assert body["largest_addable_mb"] == max(g["free_for_new_services_mb"] for g in body["gpus"])
    client = Client()
    client.force_login(staff_user)
    text = " ".join(re.sub(r"<[^>]+>", " ", client.get("/settings/gpu/").content.decode()).split())
    assert "Free for new services: " in text
    assert "(use outside GPU Config not measured)" in text


def test_a_replan_fits_a_larger_service_and_says_how_many_moves() -> None:
    from gpuconfig.domain import Service, ServiceRequest, StrategyName
    from gpuconfig.headroom import REPLAN_STEP_MB, largest_after_replan

    gpus = (Gpu(0, "A", 24_000), Gpu(1, "B", 16_000))
    requests = tuple(ServiceRequest(Service(n, "m", 10_000)) for n in ("a", "b"))
    room = headroom(gpus, {0: 10_000, 1: 10_000}, {0: 0, 1: 0})
    assert room.largest_addable_mb == 14_000  # without moving anything

    replan = largest_after_replan(
        room,
        StrategyName.VRAM_BASED,
        gpus,
        requests,
        {"a": 0, "b": 1},
        reserve_mb=0,
        time_budget_ms=250,
    )

    assert replan is not None
    assert 16_000 - REPLAN_STEP_MB < replan.largest_mb <= 16_000  # b joins a on GPU 0
    assert replan.moves == 1
