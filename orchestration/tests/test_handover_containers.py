"""Moves without going dark, for real: a stand-in service that answers HTTP on the compose
network, a client container that asks for it by its compose name every 100 ms during an
Apply, and the failed requests counted (make-before-break: none; stop then start: the gap).

The same real pieces as test_apply_containers: podman, the stand-in CDI spec, a Celery worker
on Redis, PostgreSQL. The client resolves the name on every request (busybox nslookup,
against podman's DNS) and asks the addresses in order: "ok1" the first answered, "okN" a later
one did (a client that asks only the first would have failed), "fail" none did, "nodns" the
DNS server answered that no container holds the name (a real gap); "dnsretry" counts the
times podman's DNS server (aardvark-dns) did not answer at all and the client asked again, as
a resolver does, and "dnsdown" the requests where it answered neither attempt: podman 4.3's
aardvark-dns does so now and then while containers join and leave networks, whatever the move
(seen in CI once in a make-before-break move: 5.2 s without an answer), so those are counted
and printed apart, not as a gap of the move. So is "dnsrestart": the server did not answer
the first attempt, then answered the second with no such name (seen in CI once more, 5.2 s
again: the server coming back before it loaded its records). "nodns" is an answer, at once,
that no container holds the name. Each test prints its counts and the longest time
without an answer.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from orchestration import podman
from orchestration.models import ApplyCommand
from orchestration.tests import test_apply_containers as apply_tests
from orchestration.tests.containers import (
    ComposeProject,
    project_leftovers,
    standin_compose,
)
from orchestration.tests.test_apply_containers import _body, _containers, _steps, _wait

# The apply tests' fixtures: the stand-in project the app points at, Redis, the Celery worker.
broker_url = apply_tests.broker_url
stand = apply_tests.stand
worker = apply_tests.worker

pytestmark = [pytest.mark.containers, pytest.mark.django_db(transaction=True)]


def _apply(client: Any, worker: Any, placement: dict[str, int]) -> dict[str, Any]:
    """Save ``placement`` and apply it, in one request (the Apply API with a body)."""
    response = client.post(
        "/api/system/gpu-config/apply",
        data=json.dumps(_body(placement)),
        content_type="application/json",
    )
    assert response.status_code == 202, response.json()
    body = _wait(client, response.json()["run_id"])
    assert body["run"]["status"] != "interrupted", worker.output()[-3000:]
    return body


PORT = 8080
HEALTHY_ON_ANY_GPU = [
    "CMD",
    "/bin/busybox",
    "wget",
    "-q",
    "-O",
    "/dev/null",
    f"http://127.0.0.1:{PORT}/",
]
# "$$": compose interpolates "$".
UNHEALTHY_ON_GPU_1 = [
    "CMD",
    "/bin/busybox",
    "sh",
    "-c",
    f'test "$$GPUCONFIG_GPU_INDEX" != 1 && wget -q -O /dev/null http://127.0.0.1:{PORT}/',
]
# Each request: resolve the name, ask the addresses in order; print which one answered.
CLIENT = f"""
while true; do
  n=0; got=fail; retried=0
  answer=$(nslookup ai-yolo26 2>&1)
  case "$answer" in *"timed out"*)
    # podman's DNS server did not answer: ask again, as a resolver does (glibc: attempts:2)
    read up _ < /proc/uptime; echo "dnsretry $up"; retried=1; answer=$(nslookup ai-yolo26 2>&1);;
  esac
  for a in $(echo "$answer" | awk '/^Address: /{{print $2}}'); do
    n=$((n+1))
    if timeout 5 wget -q -O /dev/null "http://$a:{PORT}/" 2>/dev/null; then got=ok$n; break; fi
  done
  if [ $n = 0 ]; then
    case "$answer" in
      *"timed out"*) got=dnsdown;;  # the DNS server answered neither attempt
      *) if [ $retried = 1 ]; then
           got=dnsrestart  # silent, then "no such name": the server coming back, records not loaded
         else
           got=nodns  # it answered at once: no container holds the name
         fi;;
    esac
  fi
  read up _ < /proc/uptime
  echo "$got $up"
  sleep 0.1
done
"""


_OUTCOMES = ("ok", "fail", "nodns", "dnsdown", "dnsrestart", "dnsretry")


def _detector_project(stand: ComposeProject, image: str, healthcheck: list[str]) -> None:
    """Three stand-ins; ai-yolo26 (the detector) serves HTTP, saying which GPU it runs on."""
    stand.remove()
    definition = standin_compose(image)
    for gone in ("ai-llm", "ai-florence"):
        del definition["services"][gone]
    detector = definition["services"]["ai-yolo26"]
    detector["command"] = [
        "sh",
        "-c",
        f"mkdir -p /www && echo $$STANDIN_GPU > /www/index.html && exec httpd -f -p {PORT} -h /www",
    ]
    detector["healthcheck"]["test"] = healthcheck
    stand.write_base(definition)
    stand.start()


@dataclass
class Client:
    """The polling client container and what it saw."""

    name: str
    env: dict[str, str]

    def polls(self) -> list[tuple[str, float]]:
        """Each request's outcome and when it was made (seconds of uptime)."""
        logs = subprocess.run(
            ["podman", "logs", self.name],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        found = []
        for line in logs.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].startswith(_OUTCOMES):
                found.append((parts[0], float(parts[1])))
        return found

    def lines(self) -> list[str]:
        return [outcome for outcome, _ in self.polls()]

    def wait_for_answers(self, count: int = 5, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while self.lines().count("ok1") < count:
            assert time.monotonic() < deadline, f"the client gets no answers: {self.lines()}"
            time.sleep(0.2)

    def stop(self) -> Counter[str]:
        polls = self.polls()
        seen = Counter(outcome for outcome, _ in polls)
        # The longest stretch without an answer, from the last answer before it to the next.
        longest, last_ok = 0.0, None
        for outcome, at in polls:
            if outcome.startswith("ok"):
                if last_ok is not None:
                    longest = max(longest, at - last_ok)
                last_ok = at
        seen["longest_silence_ms"] = round(longest * 1000)
        subprocess.run(
            ["podman", "rm", "-f", "-t", "0", self.name],
            env=self.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        return seen


def _start_client(stand: ComposeProject, image: str) -> Client:
    name = f"{stand.name}_client"
    subprocess.run(
        [
            "podman",
            "run",
            "-d",
            "--name",
            name,
            # The project's label, so that the fixture's teardown removes it whatever happens.
            "--label",
            f"{podman.PROJECT_LABEL}={stand.name}",
            "--network",
            f"{stand.name}_default",
            image,
            "sh",
            "-c",
            CLIENT,
        ],
        env=dict(stand.env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    client = Client(name, dict(stand.env))
    client.wait_for_answers()
    return client


def _requests(seen: Counter[str]) -> int:
    not_requests = ("longest_silence_ms", "dnsretry")
    return sum(n for outcome, n in seen.items() if outcome not in not_requests)


def _failed(seen: Counter[str]) -> tuple[int, int]:
    """Failed requests: for a client that asks only the first address, and for one that
    tries every address the name resolves to. A query podman's DNS server answered neither
    time ("dnsdown"), or that it left unanswered and then answered with no name while it came
    back ("dnsrestart"), is counted apart, not as a failure of the move: the name had holders,
    the server was not serving them."""
    first_only = _requests(seen) - seen["ok1"] - seen["dnsdown"] - seen["dnsrestart"]
    return first_only, seen["fail"] + seen["nodns"]


def _move_with_client(
    stand: ComposeProject, image: str, staff_api: Any, worker: Any, move: dict[str, int]
) -> tuple[dict[str, Any], Counter[str]]:
    client = _start_client(stand, image)
    try:
        body = _apply(staff_api, worker, move)
        time.sleep(1)  # the requests of the last moment are counted too
    finally:
        seen = client.stop()
    return body, seen


def _only_compose_containers(stand: ComposeProject) -> None:
    """Nothing left behind: one compose-managed container per service and no temporary copy
    (besides them, only the project's network and pod, as after any apply)."""
    listed = subprocess.run(
        [
            "podman",
            "ps",
            "-a",
            "--filter",
            f"label={podman.PROJECT_LABEL}={stand.name}",
            "--format",
            "{{.Names}}",
        ],
        env=dict(stand.env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    states = _containers(stand)
    assert sorted(listed) == sorted(f"{stand.name}_{service}_1" for service in states), listed
    left = project_leftovers(stand.name, stand.env)
    assert len(left) == len(listed) + 2, left  # the containers, the network and the pod


def _kind(argv: list[str]) -> str:
    """What a recorded command did, for checking the order."""
    if "run" in argv and "--name" in argv:
        return "run copy"
    if "up" in argv:
        return "compose up"
    if "disconnect" in argv:
        return "disconnect"
    if "connect" in argv:
        return "connect --alias ai-yolo26" if "--alias" in argv else "connect"
    return "rm copy" if argv[:2] == ["podman", "rm"] else " ".join(argv)


DESIGN = {"ai-yolo26": 0, "ai-clip": 1, "ai-enrichment": 0}


def test_a_move_with_room_hands_over_without_a_failed_request(
    stand, worker, staff_api, standin_image
):
    _detector_project(stand, standin_image, HEALTHY_ON_ANY_GPU)
    assert _apply(staff_api, worker, DESIGN)["run"]["status"] == "succeeded"
    before = _containers(stand)

    # The detector moves to the A400, which holds CLIP (1.2 GiB): room for two copies of it.
    body, seen = _move_with_client(
        stand, standin_image, staff_api, worker, {**DESIGN, "ai-yolo26": 1}
    )

    run = body["run"]
    assert run["status"] == "succeeded", run
    step = run["steps"][0]
    assert (step["service"], step["status"]) == ("ai-yolo26", "healthy")
    assert "moves without a gap: a second copy starts on GPU 1" in step["message"], step["message"]
    detector = _containers(stand)["ai-yolo26"]
    assert detector.cdi_devices == ("nvidia.com/gpu=1",)
    assert detector.env["STANDIN_GPU"] == "1"
    assert detector.id != before["ai-yolo26"].id
    for other in ("ai-clip", "ai-enrichment"):
        assert _containers(stand)[other].id == before[other].id, f"{other} was recreated"
    _only_compose_containers(stand)
    # Make before break, in this order: the copy starts (after clearing any leftover) and is
    # kept out of the name until its checks pass; the old container leaves the network;
    # compose replaces it, its new container kept out of the name until it is healthy; the
    # copy leaves and is removed.
    commands = ApplyCommand.objects.filter(run_id=run["id"]).order_by("started_at")
    hide_and_show = ["disconnect", "connect", "disconnect", "connect --alias ai-yolo26"]
    assert [_kind(c.argv) for c in commands] == [
        "rm copy",
        "run copy",
        *hide_and_show,
        "disconnect",
        "compose up",
        *hide_and_show,
        "disconnect",
        "rm copy",
    ], [c.argv for c in commands]
    assert all(c.exit_code == 0 for c in commands), [c.output for c in commands]
    assert f"{stand.name}_ai-yolo26_handover" in commands[1].argv
    first_only, any_address = _failed(seen)
    print(
        f"make-before-break: {_requests(seen)} requests, {first_only} failed "
        f"(first address only), {any_address} failed (any address): {dict(seen)}"
    )
    # A client that tries each address the name resolves to never failed. One that asks only
    # the first can, rarely, pick a container in the instant it joined the name but does not
    # listen yet (docs/orchestration.md); it is counted above, not asserted.
    assert any_address == 0, dict(seen)


def test_a_move_without_room_restarts_and_says_why(stand, worker, staff_api, standin_image):
    _detector_project(stand, standin_image, HEALTHY_ON_ANY_GPU)
    first = {"ai-yolo26": 0, "ai-clip": 0, "ai-enrichment": 1}
    assert _apply(staff_api, worker, first)["run"]["status"] == "succeeded"

    # The zoo's budget fills the A400: no room for a second copy of the detector there.
    body, seen = _move_with_client(
        stand, standin_image, staff_api, worker, {**first, "ai-yolo26": 1}
    )

    run = body["run"]
    assert run["status"] == "succeeded", run
    steps = {s["service"]: s["message"] for s in run["steps"]}
    assert "restarts, its target GPU has no room for a second copy" in steps["ai-yolo26"]
    assert _containers(stand)["ai-yolo26"].cdi_devices == ("nvidia.com/gpu=1",)
    _only_compose_containers(stand)
    first_only, any_address = _failed(seen)
    print(
        f"stop then start: {_requests(seen)} requests, {first_only} failed "
        f"(first address only), {any_address} failed (any address): {dict(seen)}"
    )
    # No copy was started: compose stopped the old container and started the new one. The
    # gap that leaves is counted above, not asserted: a client may or may not land in it.
    commands = ApplyCommand.objects.filter(run_id=run["id"]).order_by("started_at")
    assert not any(_kind(c.argv) == "run copy" for c in commands), [c.argv for c in commands]
    assert "compose up" in [_kind(c.argv) for c in commands]


def test_a_copy_that_fails_its_health_check_leaves_the_old_one_serving(
    stand, worker, staff_api, standin_image
):
    _detector_project(stand, standin_image, UNHEALTHY_ON_GPU_1)
    assert _apply(staff_api, worker, DESIGN)["run"]["status"] == "succeeded"
    before = _containers(stand)

    body, seen = _move_with_client(
        stand, standin_image, staff_api, worker, {**DESIGN, "ai-yolo26": 1}
    )

    run = body["run"]
    assert run["status"] == "rolled_back", run
    assert (
        "ai-yolo26: its second copy on GPU 1 did not come up (health check failed" in (run["error"])
    )
    assert _steps(body) == {"ai-yolo26": "rolled_back"}
    assert "kept its previous container, which never stopped" in run["steps"][0]["message"]
    detector = _containers(stand)["ai-yolo26"]
    assert detector.id == before["ai-yolo26"].id, "the old container was never stopped"
    assert detector.cdi_devices == ("nvidia.com/gpu=0",)
    assert podman.run_healthcheck(detector.id, timeout_s=20, env=stand.env) is True
    _only_compose_containers(stand)
    first_only, any_address = _failed(seen)
    print(
        f"failed copy: {_requests(seen)} requests, {first_only} failed "
        f"(first address only), {any_address} failed (any address): {dict(seen)}"
    )
    assert first_only == 0, dict(seen)


def test_a_rollback_hands_back_what_was_handed_over(stand, worker, staff_api, standin_image):
    # CLIP hands over to GPU 1 first (services go in name order); then the detector's copy
    # fails its health check on GPU 1, so the run rolls back: CLIP goes back the same way.
    _detector_project(stand, standin_image, UNHEALTHY_ON_GPU_1)
    assert _apply(staff_api, worker, DESIGN)["run"]["status"] == "succeeded"
    first = {"ai-yolo26": 0, "ai-clip": 0, "ai-enrichment": 0}
    assert _apply(staff_api, worker, first)["run"]["status"] == "succeeded"
    before = _containers(stand)

    body, seen = _move_with_client(
        stand, standin_image, staff_api, worker, {**first, "ai-clip": 1, "ai-yolo26": 1}
    )

    run = body["run"]
    assert run["status"] == "rolled_back", run
    assert "ai-yolo26: its second copy on GPU 1 did not come up" in run["error"]
    after = _containers(stand)
    assert after["ai-yolo26"].id == before["ai-yolo26"].id, "the detector never stopped"
    clip = after["ai-clip"]
    assert clip.cdi_devices == ("nvidia.com/gpu=0",), "CLIP is back on its previous GPU"
    assert clip.id != before["ai-clip"].id
    _only_compose_containers(stand)
    commands = ApplyCommand.objects.filter(run_id=run["id"]).order_by("started_at")
    copies = [c.argv[c.argv.index("--name") + 1] for c in commands if _kind(c.argv) == "run copy"]
    assert copies == [
        f"{stand.name}_ai-clip_handover",
        f"{stand.name}_ai-yolo26_handover",
        f"{stand.name}_ai-clip_handover",  # the way back
    ], copies
    first_only, any_address = _failed(seen)
    print(
        f"rollback handing back: {_requests(seen)} requests to the detector, {first_only} "
        f"failed (first address only), {any_address} failed (any address): {dict(seen)}"
    )
    # The detector itself is never touched here; podman 4.3's aardvark-dns may still fail to
    # answer one query while the other service's containers join and leave the network (seen
    # once in 5 runs, also with no handover at all). No request may fail once resolved.
    assert seen["fail"] == 0, dict(seen)
    assert seen["nodns"] <= 1, dict(seen)
