"""The rule that decides which moves keep a service answering (pure: no podman, no database)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from gpuconfig.domain import Configuration, ResolvedAssignment
from orchestration.handover_rule import choose_handovers, fixed_host_ports, overlap_mb
from orchestration.podman import ContainerState

ESTIMATES = {"ai-yolo26": 650, "ai-clip": 1200, "ai-enrichment": 6800, "ai-llm": 21700}
ROOM = {0: 24564 - 512, 1: 4094 - 512}


def _config(placement: dict[str, int], budgets: dict[str, float] | None = None) -> Configuration:
    budgets = budgets or {}
    return Configuration(
        tuple(ResolvedAssignment(name, gpu, budgets.get(name)) for name, gpu in placement.items())
    )


def _running(name: str, *, health: str | None = "healthy", running: bool = True) -> ContainerState:
    return ContainerState(
        id=f"{name}-id",
        name=f"p_{name}_1",
        service=name,
        running=running,
        status="running" if running else "exited",
        health=health,
        cdi_devices=(),
        env=MappingProxyType({}),
    )


def _choose(
    target: Configuration,
    previous: Configuration | None,
    *,
    services: list[str] | None = None,
    running: dict[str, ContainerState] | None = None,
    definitions: dict[str, dict[str, Any]] | None = None,
) -> dict[str, str]:
    names = services or ["ai-yolo26"]
    choices = choose_handovers(
        names,
        target=target,
        previous=previous,
        running=running if running is not None else {n: _running(n) for n in names},
        definitions=definitions if definitions is not None else {n: {} for n in names},
        estimates=ESTIMATES,
        room_mb=ROOM,
    )
    return {name: choice.reason for name, choice in choices.items()}


BEFORE = _config({"ai-yolo26": 0, "ai-clip": 1, "ai-enrichment": 0})
AFTER = _config({"ai-yolo26": 1, "ai-clip": 1, "ai-enrichment": 0})


def test_a_move_to_a_gpu_with_room_hands_over():
    assert _choose(AFTER, BEFORE)["ai-yolo26"].startswith("moves without a gap: a second copy")


def test_a_gpu_without_room_for_the_copy_restarts():
    # The zoo's budget fills the A400 (3.4 GiB, 3482 MiB, of the 3582 MiB beside the
    # reserve): no room for a second detector.
    target = _config({"ai-yolo26": 1, "ai-enrichment": 1}, {"ai-enrichment": 2.8})
    previous = _config({"ai-yolo26": 0, "ai-enrichment": 1}, {"ai-enrichment": 3.4})
    assert _choose(target, previous) == {
        # 650 + 2868 (2.8 GiB) + a second 650 = 4168 MiB; 4094 - 512 = 3582 MiB.
        "ai-yolo26": "restarts, its target GPU has no room for a second copy (needs 4.1 GiB at "
        "once, has 3.5 GiB)"
    }


def test_what_still_leaves_the_target_gpu_counts_against_the_room():
    # CLIP leaves the A400 in the same run; until it has gone, it still holds 1.2 GiB there.
    previous = _config({"ai-yolo26": 0, "ai-clip": 1})
    target = _config({"ai-yolo26": 1, "ai-clip": 0})
    need = overlap_mb(
        1,
        "ai-yolo26",
        ["ai-yolo26", "ai-clip"],
        target=target,
        previous=previous,
        estimates=ESTIMATES,
    )
    assert need == 650 + 650 + 1200


@pytest.mark.parametrize(
    ("state", "definition", "reason"),
    [
        (None, {}, "starts, it is not running now"),
        (_running("ai-yolo26", running=False), {}, "starts, it is not running now"),
        (
            _running("ai-yolo26", health=None),
            {},
            "restarts, it has no health check to tell when a second copy is ready",
        ),
        (_running("ai-yolo26"), {"ports": ["8080:80"]}, "restarts, it publishes host port 8080"),
        (
            _running("ai-yolo26"),
            {"ports": ["127.0.0.1:9000:80/tcp", {"target": 81, "published": "9001"}]},
            "restarts, it publishes host port 9000, 9001",
        ),
        (_running("ai-yolo26"), {"network_mode": "host"}, "restarts, it uses the host's network"),
        (
            _running("ai-yolo26"),
            {"networks": {"default": {"ipv4_address": "10.89.0.50"}}},
            "restarts, it has a fixed address on its network",
        ),
    ],
)
def test_services_that_cannot_have_a_second_copy_restart_and_say_why(state, definition, reason):
    running = {"ai-yolo26": state} if state is not None else {}
    assert _choose(AFTER, BEFORE, running=running, definitions={"ai-yolo26": definition}) == {
        "ai-yolo26": reason
    }


def test_a_container_port_without_a_host_port_does_not_stop_a_handover():
    assert fixed_host_ports({"ports": ["80", 81, {"target": 82}, "127.0.0.1::83"]}) == []
    reasons = _choose(AFTER, BEFORE, definitions={"ai-yolo26": {"ports": ["80"]}})
    assert reasons["ai-yolo26"].startswith("moves without a gap")


def test_a_first_apply_and_a_switched_off_service_never_hand_over():
    assert _choose(AFTER, None)["ai-yolo26"] == (
        "restarts, nothing was applied before, so there is nothing to fall back on"
    )
    off = Configuration((ResolvedAssignment("ai-yolo26", 1, enabled=False),))
    assert _choose(off, BEFORE)["ai-yolo26"] == "stops, it is switched off"


def test_a_gpu_that_is_not_there_has_no_room():
    target = _config({"ai-yolo26": 2})
    assert _choose(target, BEFORE)["ai-yolo26"] == "restarts, its target GPU 2 is not detected"
