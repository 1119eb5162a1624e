"""The GPU cards show each GPU's health, its reasons, and a cordon with who set it and why."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from devices.gpu_health import reset_health_state
from devices.services import gpu_inventory_rescan, reset_sampler

pytestmark = pytest.mark.django_db

URL = "/settings/gpu/"
HX = {"HX-Request": "true"}


def _gpu(index: int, name: str, total: int, **extra: Any) -> dict[str, Any]:
    return {
        "index": index,
        "name": name,
        "vram_total_mb": total,
        "vram_used_mb": 300,
        "compute_capability": "8.6",
        **extra,
    }


@pytest.fixture
def sick_box(settings: Any, tmp_path: Path) -> None:
    """The reference box with a warm A5500 and an A400 that fell off the bus."""
    path = tmp_path / "gpus.json"
    path.write_text(
        json.dumps(
            {
                "gpus": [
                    _gpu(
                        0,
                        "NVIDIA RTX A5500",
                        24564,
                        temperature_c=84,
                        health={"ecc_uncorrected_volatile": 0, "slowdown_temperature_c": 87},
                    ),
                    _gpu(1, "NVIDIA RTX A400", 4094, health={"xids": [79]}),
                ]
            }
        )
    )
    settings.GPUCONFIG_SIMULATED_GPUS = path
    reset_health_state()
    reset_sampler()
    gpu_inventory_rescan()


def _card(html: str, index: int) -> str:
    # From this card's opening tag to the next card's (reasons are <li>s inside a card).
    match = re.search(
        rf'data-gpu-index="{index}"(.*?)(?:data-gpu-index=|</ul>\s*</section>|$)', html, re.S
    )
    assert match, f"no card for GPU {index}"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


def test_the_cards_show_health_and_the_automatic_cordon(sick_box: None, staff_user: Any) -> None:
    client = Client()
    client.force_login(staff_user)

    html = client.get(URL, {"part": "gpu-cards"}, headers=HX).content.decode()

    a5500, a400 = _card(html, 0), _card(html, 1)
    assert "Warning" in a5500
    assert "Temperature 84 °C is within 5 °C of the slowdown threshold (87 °C)." in a5500
    assert "In maintenance" not in a5500
    assert "Critical" in a400
    assert "Xid 79 (GPU has fallen off the bus): the GPU is lost or must be reset." in a400
    assert re.search(
        r"In maintenance since \d{4}-\d\d-\d\d \d\d:\d\d UTC, set by GPU Config \(health check\): "
        r"Cordoned automatically: Xid 79 \(GPU has fallen off the bus\): the GPU is lost or must "
        r"be reset\. It takes no new services; those on it keep running until it is drained\.",
        a400,
    )


MAINTENANCE = "/settings/gpu/1/maintenance/"


@pytest.fixture
def reference_box() -> None:
    reset_health_state()
    reset_sampler()
    gpu_inventory_rescan()


def _page_text(client: Client) -> str:
    html = client.get(URL).content.decode()
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_staff_put_a_gpu_in_maintenance_from_its_card_and_take_it_out(
    reference_box: None, staff_user: Any
) -> None:
    client = Client()
    client.force_login(staff_user)
    assert "Put in maintenance" in client.get(URL).content.decode()

    response = client.post(MAINTENANCE, {"action": "start", "reason": "Fan replacement"})

    assert response.status_code == 302
    text = _page_text(client)
    assert (
        "GPU 1 is in maintenance: it takes no new services. The services on it keep running "
        "until you drain it."
    ) in text
    assert re.search(
        r"In maintenance since [0-9: -]+ UTC, set by operator: Fan replacement It takes no new",
        _card(client.get(URL, {"part": "gpu-cards"}, headers=HX).content.decode(), 1),
    )
    client.post(MAINTENANCE, {"action": "end"})
    assert "GPU 1 is out of maintenance: plans may use it again." in _page_text(client)


def test_a_missing_reason_is_refused_on_the_page_and_nothing_changes(
    reference_box: None, staff_user: Any
) -> None:
    client = Client()
    client.force_login(staff_user)

    client.post(MAINTENANCE, {"action": "start", "reason": ""})

    text = _page_text(client)
    assert "Give a reason for the maintenance (what is being done). Nothing was changed." in text
    assert "In maintenance since" not in text


def test_read_only_users_see_no_maintenance_button_and_cannot_post(
    reference_box: None, member_user: Any
) -> None:
    client = Client()
    client.force_login(member_user)

    assert "Put in maintenance" not in client.get(URL).content.decode()
    response = client.post(MAINTENANCE, {"action": "start", "reason": "mine"})

    assert response.status_code == 403
    assert "In maintenance since" not in _page_text(client)
