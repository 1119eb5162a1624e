"""The GPU cards show each GPU's vendor, an AMD GPU's container device and an integrated
GPU's mark (issue 22), on a mixed NVIDIA + AMD host."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from devices.services import gpu_inventory_rescan
from devices.tests.test_inventory_vendors import MIXED

pytestmark = pytest.mark.django_db


def _card(html: str, index: int) -> str:
    # From this card's <li> to the next card's (a card holds lists of its own).
    chunks = [c for c in html.split('<li class="gpu') if f'data-gpu-index="{index}"' in c]
    assert len(chunks) == 1, f"no card for GPU {index}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", chunks[0]))


def test_each_card_names_its_vendor_and_an_amd_cards_container_device(
    staff: Client, settings, tmp_path
) -> None:
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps({"gpus": MIXED}))
    settings.GPUCONFIG_SIMULATED_GPUS = path
    gpu_inventory_rescan()

    response = staff.get("/settings/gpu/", {"part": "gpu-cards"}, headers={"HX-Request": "true"})

    html = response.content.decode()
    assert response.status_code == 200
    nvidia, amd, apu = _card(html, 0), _card(html, 1), _card(html, 2)
    assert "NVIDIA" in nvidia and "Container device" not in nvidia
    assert "AMD" in amd and "Container device amd.com/gpu=0" in amd
    assert "Integrated" not in amd
    assert "Integrated" in apu and "amd.com/gpu=1" in apu
