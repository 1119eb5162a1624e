"""Two GPU hosts besides GPU Config's own, for real (issue 20): the production stack, and two
agent containers from docker-compose.agent.yml on this machine, each the agent of its own
"host": its own compose project of stand-in AI services in a folder of its own, its own
simulated GPU file, its own queue (host.<name>) and credential, joined through the command
GPU Config shows when the host is added.

Everything is driven over HTTP only (the proxy's published port), as an operator would:
both hosts and all their GPUs appear; ai-clip, defined on both hosts, moves from host A to
host B, and podman shows it running on B's device and stopped on A; agent B stopped makes
host B offline and an Apply touching it is refused; a step that fails on B rolls back A too.

How the agents reach the stack is the guide's (docs/development/multi-gpu.md, "Several
hosts"): GPU Config's URL through the proxy's published port, and its Redis published by a
local override on the private address the agents reach (this machine's own address here,
which containers reach through podman's bridge). What stands in: the GPUs. The CDI stand-in
spec is one for the whole machine (podman reads every spec in /var/run/cdi; it gives
`nvidia.com/gpu=0` and `=1`), so each host's simulated GPU file decides what it has: host B
reports a third GPU that CDI cannot resolve, as with a GPU that fell off the bus.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from ruamel.yaml import YAML

from tests.stack.stack import (
    APP_UID,
    COMPOSE,
    ROOT,
    UP_TIMEOUT_S,
    Browser,
    Stack,
    device_of,
    environment,
    free_port,
    production_stack,
    save_and_apply,
)

pytestmark = pytest.mark.stack

HOST_A, HOST_B = "gpu-box-a", "gpu-box-b"
AI_STANDIN = "localhost/gpuconfig-ai-standin:latest"
# GPU Config's own host (the stack's simulated reference pair) keeps every service it can.
LOCAL = {"ai-llm": 0, "ai-florence": 0, "ai-enrichment": 1}
# Host A defines ai-clip and ai-yolo26, host B ai-clip only: the service both hosts run.
SERVICES = {HOST_A: ("ai-clip", "ai-yolo26"), HOST_B: ("ai-clip",)}
# Host A's two GPUs resolve through CDI; host B's third (index 2) does not.
GPU_COUNT = {HOST_A: 2, HOST_B: 3}
OFFLINE_SECONDS = 6
AGENT_READY_S = 120


def _address() -> str:
    """This machine's own (non-loopback) address: what a container reaches it by, as another
    machine of the AI system would reach GPU Config's."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    for line in out.splitlines():
        parts = line.split()
        return parts[parts.index("inet") + 1].split("/")[0]
    pytest.skip("this machine has no non-loopback IPv4 address for the agents to reach")


def _uuid(host: str, index: int) -> str:
    return f"GPU-{host[-1] * 8}-0000-0000-0000-00000000000{index}"


@dataclass
class AgentHost:
    """One GPU host on this machine: the AI system's folder (its compose project) and the
    agent's compose project started beside it."""

    name: str
    folder: Path
    stack: Stack

    @property
    def ai_project(self) -> str:
        return self.folder.name

    @property
    def agent_project(self) -> str:
        # Two agents on one machine need two projects (docker-compose.agent.yml names its
        # project gpuconfig-agent, right for the one agent of a real host).
        return f"{self.folder.name}-agent"

    @property
    def agent_container(self) -> str:
        return f"{self.agent_project}_gpuconfig-agent_1"

    def _run(self, command: list[str], **env: str) -> str:
        result = subprocess.run(
            command,
            cwd=self.folder,
            # podman-compose as the operator has it on PATH.
            env={
                **self.stack.env,
                "PATH": f"{Path(sys.executable).parent}:{self.stack.env['PATH']}",
                **env,
            },
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{command!r} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def write_ai_system(self) -> None:
        """The AI system's compose file (the production file's definitions of its services,
        on the stand-in image), its config/ folder for the override, and its GPUs."""
        prod = YAML(typ="safe").load(COMPOSE.read_text(encoding="utf-8"))
        services = {
            name: {**prod["services"][name], "image": AI_STANDIN, "mem_limit": "256m"}
            for name in SERVICES[self.name]
        }
        with (self.folder / "docker-compose.yml").open("w", encoding="utf-8") as out:
            YAML().dump({"services": services}, out)
        (self.folder / "config").mkdir()
        shutil.chown(self.folder / "config", APP_UID, APP_UID)
        gpus = [
            {
                "index": i,
                "uuid": _uuid(self.name, i),
                "name": "NVIDIA L4",
                "vram_total_mb": 23034,
                "vram_used_mb": 300,
                "compute_capability": "8.9",
            }
            for i in range(GPU_COUNT[self.name])
        ]
        (self.folder / "gpus.json").write_text(json.dumps({"gpus": gpus}), encoding="utf-8")
        shutil.copy(ROOT / "docker-compose.agent.yml", self.folder / "docker-compose.agent.yml")
        self.ai_compose("up", "-d")

    def ai_compose(self, *args: str) -> str:
        return self._run(
            [str(Path(sys.executable).parent / "podman-compose"), "-f", "docker-compose.yml", *args]
        )

    def agent_compose(self, *args: str) -> str:
        return self._run(
            [
                str(Path(sys.executable).parent / "podman-compose"),
                "--env-file",
                "gpuconfig-agent.env",
                "-f",
                "docker-compose.agent.yml",
                *args,
            ],
            COMPOSE_PROJECT_NAME=self.agent_project,
        )

    def join(self, agent_command: str) -> None:
        """Run the command GPU Config showed, in the AI system's folder: it writes the env
        file, then starts the agent. This machine's own settings go into the env file between
        the two, as the guide has the operator add them (a host without GPUs: the simulated
        file and no CDI device for the agent; the podman socket's folder and group)."""
        lines = agent_command.splitlines()
        assert lines[-1] == (
            "podman-compose --env-file gpuconfig-agent.env -f docker-compose.agent.yml up -d"
        ), agent_command
        # The operator's shell runs it as shown.
        self._run(["sh", "-c", "\n".join(lines[:-1])])
        with (self.folder / "gpuconfig-agent.env").open("a", encoding="utf-8") as env_file:
            env_file.write(
                "\n".join(
                    [
                        f"GPUCONFIG_SIMULATED_GPUS={self.folder / 'gpus.json'}",
                        "GPUCONFIG_GPU_DEVICE=/dev/null",
                        f"PODMAN_SOCKET_DIR={self.stack.socket_path.parent}",
                        "PODMAN_SOCKET_GID=0",
                        "",
                    ]
                )
            )
        self._run(["sh", "-c", lines[-1]], COMPOSE_PROJECT_NAME=self.agent_project)

    def container(self, service: str) -> dict[str, Any]:
        ids = self.stack.podman(
            "ps",
            "-a",
            "-q",
            "--filter",
            f"label=com.docker.compose.project={self.ai_project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        ).split()
        assert len(ids) == 1, f"{self.name}: expected one container for {service}, found {ids}"
        return dict(json.loads(self.stack.podman("inspect", ids[0]))[0])

    def log(self) -> str:
        result = subprocess.run(
            ["podman", "logs", "--tail", "60", self.agent_container],
            env=self.stack.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return f"--- agent of {self.name}:\n{result.stdout}{result.stderr}"

    def remove(self) -> None:
        for down in (self.agent_compose, self.ai_compose):
            try:
                down("down", "-v", "-t", "2")
            except AssertionError as exc:
                print(f"teardown of {self.name}: {exc}")
        self.stack.podman("network", "rm", "-f", f"{self.ai_project}_default", check=False)


# The guide's local override (docs/development/multi-gpu.md, "Several hosts"): GPU Config's
# Redis with a password, published on the private address the agents reach.
LOCAL_OVERRIDE = """\
services:
  gpuconfig-redis:
    command:
      - redis-server
      - --requirepass
      - ${GPUCONFIG_REDIS_PASSWORD:?set GPUCONFIG_REDIS_PASSWORD in .env}
      - --save
      - ""
      - --appendonly
      - "no"
    environment:
      REDISCLI_AUTH: ${GPUCONFIG_REDIS_PASSWORD}
    ports:
      - "ADDRESS:PORT:6379"
  gpuconfig-web:
    environment: &broker
      CELERY_BROKER_URL: redis://:${GPUCONFIG_REDIS_PASSWORD}@gpuconfig-redis:6379/0
      GPUCONFIG_CACHE_URL: redis://:${GPUCONFIG_REDIS_PASSWORD}@gpuconfig-redis:6379/1
  gpuconfig-worker:
    environment: *broker
"""


@dataclass
class Broker:
    address: str
    port: int
    password: str


@pytest.fixture(scope="module")
def broker() -> Broker:
    return Broker(_address(), free_port(), secrets.token_hex(16))


@pytest.fixture(scope="module")
def stack(broker: Broker) -> Iterator[Stack]:
    """The production stack as the guide sets it up for added hosts: Redis with a password,
    published on this machine's address by the local override; in .env, the broker URL the
    agent's command shows and a short offline limit; the proxy on that address too."""
    override = LOCAL_OVERRIDE.replace("ADDRESS", broker.address).replace("PORT", str(broker.port))
    with production_stack(
        extra_env=[
            f"GPUCONFIG_REDIS_PASSWORD={broker.password}",
            "GPUCONFIG_AGENT_BROKER_URL="
            f"redis://:{broker.password}@{broker.address}:{broker.port}/0",
            f"GPUCONFIG_HOST_OFFLINE_SECONDS={OFFLINE_SECONDS}",
            f"DJANGO_ALLOWED_HOSTS=localhost,127.0.0.1,{broker.address}",
        ],
        local_override=override,
        address=broker.address,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def hosts(stack: Stack) -> Iterator[dict[str, AgentHost]]:
    """Hosts A and B added over the API, each agent started with the command shown."""
    started = time.monotonic()
    browser = Browser(stack.base_url())
    browser.login("admin", stack.admin_password)
    made: dict[str, AgentHost] = {}
    try:
        for name in (HOST_A, HOST_B):
            folder = stack.folder.parent / f"ai{name[-1]}{stack.project[-6:]}"
            folder.mkdir()
            host = made[name] = AgentHost(name, folder, stack)
            host.write_ai_system()
            code, added = browser.json("POST", "/api/hosts", {"name": name})
            assert code == 201, added
            assert added["agent_command"].startswith("cat > gpuconfig-agent.env <<EOF")
            host.join(added["agent_command"])
        _wait_for_hosts(browser, made, {HOST_A: "online", HOST_B: "online"}, AGENT_READY_S)
        stack.timings["agents_joined_s"] = time.monotonic() - started
        yield made
    finally:
        for host in made.values():
            host.remove()


def _hosts(browser: Browser) -> dict[str, dict[str, Any]]:
    code, body = browser.json("GET", "/api/hosts")
    assert code == 200, body
    return {host["name"]: host for host in body}


def _wait_for_hosts(
    browser: Browser, hosts: dict[str, AgentHost], states: dict[str, str], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = _hosts(browser)
        if all(seen.get(name, {}).get("state") == state for name, state in states.items()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"hosts did not read {states} within {timeout_s} s: "
                f"{json.dumps(seen, indent=1)}\n" + "\n".join(h.log() for h in hosts.values())
            )
        time.sleep(0.5)


def _placement(**moves: int) -> list[dict[str, Any]]:
    placed = {**LOCAL, "ai-yolo26": 100, "ai-clip": 100, **moves}
    return [{"service": name, "gpu_index": gpu} for name, gpu in placed.items()]


def _failed(run: dict[str, Any], *hosts: AgentHost) -> str:
    return json.dumps(run, indent=1)[-3000:] + "\n".join(h.log() for h in hosts)


def test_a_service_moves_between_two_agent_hosts_over_http(
    stack: Stack, hosts: dict[str, AgentHost], broker: Broker
) -> None:
    a, b = hosts[HOST_A], hosts[HOST_B]
    # The broker the agents reach answers only with its password (the boundary between hosts).
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=broker.address, port=broker.port, socket_connect_timeout=5).ping()
    browser = Browser(stack.base_url())
    browser.login("admin", stack.admin_password)

    # Both hosts, joined with their tokens, with their GPUs and the services they define.
    seen = _hosts(browser)
    assert seen[HOST_A]["gpus"] == [100, 101] and seen[HOST_B]["gpus"] == [200, 201, 202]
    assert sorted(seen[HOST_A]["services"]) == ["ai-clip", "ai-yolo26"]
    assert seen[HOST_B]["services"] == ["ai-clip"]
    assert seen[HOST_A]["queue"] == f"host.{HOST_A}" and seen[HOST_B]["queue"] == f"host.{HOST_B}"
    code, gpus = browser.json("GET", "/api/system/gpus")
    assert code == 200, gpus
    shown = {gpu["index"]: gpu for gpu in gpus["gpus"]}
    assert set(shown) == {0, 1, 100, 101, 200, 201, 202}, sorted(shown)
    assert shown[201]["uuid"] == _uuid(HOST_B, 1) and shown[201]["device_index"] == 1

    # Host B's AI system runs as its operator started it: ai-clip without a GPU.
    b_before = b.container("ai-clip")
    assert b_before["State"]["Status"] == "running" and device_of(b_before) == []

    # The first Apply: ai-clip and ai-yolo26 on host A's GPU 0 (global 100).
    timer = time.monotonic()
    first = save_and_apply(browser, _placement())
    stack.timings["apply_first_s"] = time.monotonic() - timer
    assert (first.get("run") or first)["status"] == "succeeded", _failed(first, a, b)
    assert device_of(a.container("ai-clip")) == ["nvidia.com/gpu=0"]
    yolo = a.container("ai-yolo26")
    assert device_of(yolo) == ["nvidia.com/gpu=0"] and yolo["State"]["Status"] == "running"
    # ai-clip runs on one host only: B's own copy, started before GPU Config placed it on A,
    # was stopped there (stopped, not recreated: the same container).
    b_after_first = b.container("ai-clip")
    assert b_after_first["Id"] == b_before["Id"]
    assert b_after_first["State"]["Status"] != "running", "ai-clip still runs on B as well"

    # ai-clip moves to host B's GPU 1 (global 201): running there on B's own device 1 with
    # B's GPU's UUID, and stopped on A; nothing else on A is recreated.
    timer = time.monotonic()
    moved = save_and_apply(browser, _placement(**{"ai-clip": 201}))
    stack.timings["apply_move_a_to_b_s"] = time.monotonic() - timer
    assert (moved.get("run") or moved)["status"] == "succeeded", _failed(moved, a, b)
    on_b = b.container("ai-clip")
    assert on_b["Id"] != b_before["Id"] and on_b["State"]["Status"] == "running"
    assert device_of(on_b) == ["nvidia.com/gpu=1"], "B's own index 1, not 201"
    assert environment(on_b)["STANDIN_GPU"] == "1"  # what podman resolved through CDI
    assert environment(on_b)["GPUCONFIG_GPU_UUID"] == _uuid(HOST_B, 1)
    assert a.container("ai-clip")["State"]["Status"] != "running", "ai-clip still runs on A"
    assert a.container("ai-yolo26")["Id"] == yolo["Id"], "ai-yolo26 was recreated on A"

    # Agent B stops: host B reads offline, and an Apply that would change it is refused
    # before anything changes anywhere.
    b.agent_compose("stop", "-t", "5")
    timer = time.monotonic()
    _wait_for_hosts(browser, hosts, {HOST_B: "offline", HOST_A: "online"}, 3 * OFFLINE_SECONDS)
    stack.timings["offline_after_stop_s"] = time.monotonic() - timer
    code, config = browser.json("GET", "/api/system/gpu-config")
    assert code == 200, config
    code, saved = browser.json(
        "PUT",
        "/api/system/gpu-config",
        {"strategy": "manual", "version": config["version"], "assignments": _placement()},
    )
    assert code == 200, saved
    code, refused = browser.json("POST", "/api/system/gpu-config/apply", {})
    assert code == 409, refused
    assert refused["error"].startswith(f"Cannot apply: host {HOST_B} is offline since "), refused
    assert "would change ai-clip there. Nothing was changed." in refused["error"], refused
    assert b.container("ai-clip")["Id"] == on_b["Id"]
    assert a.container("ai-clip")["State"]["Status"] != "running"

    # Agent B back (its credential is in its volume): online again.
    timer = time.monotonic()
    b.agent_compose("start")
    _wait_for_hosts(browser, hosts, {HOST_B: "online"}, AGENT_READY_S)
    stack.timings["online_after_start_s"] = time.monotonic() - timer

    # One Apply changes host A (ai-yolo26 to its GPU 1) and host B (ai-clip to its GPU 2,
    # which CDI cannot resolve there): B's step fails, and A is put back as well.
    timer = time.monotonic()
    failed = save_and_apply(browser, _placement(**{"ai-yolo26": 101, "ai-clip": 202}))
    stack.timings["apply_failing_on_b_s"] = time.monotonic() - timer
    run = failed.get("run") or failed
    assert run["status"] == "rolled_back", _failed(failed, a, b)
    assert f"host {HOST_B} failed" in run["error"], run["error"]
    yolo_after = a.container("ai-yolo26")
    assert yolo_after["Id"] != yolo["Id"], "host A was not changed, so nothing was rolled back"
    assert device_of(yolo_after) == ["nvidia.com/gpu=0"], "host A's ai-yolo26 not put back"
    assert yolo_after["State"]["Status"] == "running"
    clip_after = b.container("ai-clip")
    assert device_of(clip_after) == ["nvidia.com/gpu=1"], "host B's ai-clip not put back"
    assert clip_after["State"]["Status"] == "running"
    print(f"two-host stack timings: {stack.timings}")
