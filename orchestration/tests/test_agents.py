"""GPU hosts with their real agents: ``manage.py run_agent`` processes that join a live GPU
Config over HTTP, report, and become Celery workers on their own queues of a real Redis;
the central check (``orchestration.check_hosts``) pings them with Celery's remote control.

What is faked is only what cannot exist here: each agent's GPUs (a simulated GPU file). An
agent has no database, and any access would fail: it gets a PostgreSQL URL where nothing
listens, or (as in its container) the SQLite default, whose file is never created.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rest_framework.test import APIClient

from devices.models import Host, HostStatus
from orchestration.tasks import check_hosts_task
from orchestration.tests.agents import Agent, agent_env, celery_on

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
OFFLINE_SECONDS = 4
# Nothing listens on port 1: an agent that touched the database would fail at once.
NO_DATABASE = "postgres://the-agent-has-no-database@127.0.0.1:1/none"


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A Redis database of these tests' own, emptied first (no leftover queue or task)."""
    url = os.environ.get("GPUCONFIG_TEST_AGENT_REDIS_URL", "redis://127.0.0.1:6379/7")
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {url} ({exc}); start redis-server")
    client.flushdb()
    with celery_on(url):
        yield url


@pytest.fixture
def short_offline(settings: Any) -> int:
    settings.GPUCONFIG_HOST_OFFLINE_SECONDS = OFFLINE_SECONDS
    return OFFLINE_SECONDS


def _gpu_file(path: Path, host: str, count: int) -> Path:
    gpus = [
        {
            "index": i,
            "uuid": f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{host}.{i}')}",
            "name": "NVIDIA L4",
            "vram_total_mb": 23034,
            "vram_used_mb": 500 + i,
            "compute_capability": "8.9",
        }
        for i in range(count)
    ]
    path.write_text(json.dumps({"gpus": gpus}))
    return path


def _compose_file(path: Path, services: dict[str, int]) -> Path:
    """A compose file with labelled services (name: VRAM estimate) and one unlabelled one."""
    lines = ["services:"]
    for name, vram in services.items():
        lines += [
            f"  {name}:",
            "    image: localhost/standin:latest",
            "    labels:",
            f"      gpuconfig.model: {name}-model",
            f'      gpuconfig.vram_estimate_mb: "{vram}"',
        ]
    lines += ["  not-managed:", "    image: localhost/standin:latest"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def agents(live_server: Any, broker_url: str, tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """Makes agents (not started) for hosts added in GPU Config; stops them all afterwards."""
    made: list[Agent] = []

    def make(
        name: str, *, gpus: int, services: dict[str, int], database: str | None = None
    ) -> Agent:
        folder = tmp_path / name
        folder.mkdir()
        env = agent_env(
            name,
            folder,
            url=live_server.url,
            broker=broker_url,
            GPUCONFIG_SIMULATED_GPUS=str(_gpu_file(folder / "gpus.json", name, gpus)),
            GPUCONFIG_COMPOSE_FILE=str(_compose_file(folder / "compose.yml", services)),
        )
        if database is not None:  # else the SQLite default in its data folder, never made
            env["DATABASE_URL"] = database
        agent = Agent(name, folder, env)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop()


def _add_host(staff_api: APIClient, name: str) -> str:
    answer = staff_api.post("/api/hosts", {"name": name}, format="json")
    assert answer.status_code == 201, answer.content
    return str(answer.json()["join_token"])


def _hosts(api: APIClient) -> dict[str, dict[str, Any]]:
    answer = api.get("/api/hosts")
    assert answer.status_code == 200, answer.content
    return {host["name"]: host for host in answer.json()}


def _name(letter: str) -> str:
    return f"box-{letter}-{uuid.uuid4().hex[:6]}"


def test_two_agents_report_a_dead_one_goes_offline_and_comes_back(
    agents: Callable[..., Agent], staff_api: APIClient, member_api: APIClient, short_offline: int
) -> None:
    a_name, b_name = _name("a"), _name("b")
    a = agents(a_name, gpus=2, services={"ai-llm": 8000, "ai-clip": 1200}, database=NO_DATABASE)
    b = agents(b_name, gpus=1, services={"ai-yolo": 650})
    a_token, b_token = _add_host(staff_api, a_name), _add_host(staff_api, b_name)
    started = time.monotonic()
    a.start(join_token=a_token)
    b.start(join_token=b_token)
    print(f"\ntwo agents joined, reported and ready in {time.monotonic() - started:.1f} s")

    # What a user sees: both online, their GPUs at their hosts' global indexes, their
    # labelled services (the unlabelled one is not GPU Config's).
    hosts = _hosts(member_api)
    assert hosts[a_name]["state"] == "online"
    assert hosts[b_name]["state"] == "online"
    assert hosts[a_name]["gpus"] == [100, 101]
    assert hosts[b_name]["gpus"] == [200]
    assert hosts[a_name]["services"] == ["ai-clip", "ai-llm"]
    assert hosts[b_name]["services"] == ["ai-yolo"]
    assert hosts[a_name]["queue"] == f"host.{a_name}"
    # The credential is kept private on the agent's host.
    credential = b.folder / "state" / "credential"
    assert credential.stat().st_mode & 0o777 == 0o600
    assert (b.folder / "state").stat().st_mode & 0o777 == 0o700

    checked = check_hosts_task()
    assert sorted(checked["answered"]) == sorted([a_name, b_name])

    b.kill()
    killed = time.monotonic()
    offline_after = None
    while time.monotonic() - killed < 3 * short_offline + 10:
        checked = check_hosts_task()
        if b_name in checked["offline"]:
            offline_after = time.monotonic() - killed
            break
        time.sleep(1)
    assert offline_after is not None, "the check never wrote host B offline"
    print(f"agent B killed -> written offline by the check after {offline_after:.1f} s")
    # A reported only at its start, more than GPUCONFIG_HOST_OFFLINE_SECONDS ago: it reads
    # online because it answered the check's ping.
    assert offline_after > short_offline
    assert a_name in checked["answered"]
    hosts = _hosts(member_api)
    assert hosts[b_name]["state"] == "offline"
    assert hosts[b_name]["since"] is not None
    assert hosts[a_name]["state"] == "online"
    assert Host.objects.get(name=b_name).status == HostStatus.OFFLINE

    # B comes back with its stored credential (no token), and a GPU more: a fresh report.
    _gpu_file(b.folder / "gpus.json", b_name, 2)
    restarted = time.monotonic()
    b.start(join_token="")
    print(f"agent B restarted with its credential, ready in {time.monotonic() - restarted:.1f} s")
    # Alive is what answers the ping (a slow start on a loaded machine can take longer than
    # the offline limit between its report and its worker being ready).
    checked = check_hosts_task()
    assert sorted(checked["answered"]) == sorted([a_name, b_name])
    hosts = _hosts(member_api)
    assert hosts[b_name]["state"] == "online"
    assert hosts[b_name]["since"] is None
    assert hosts[b_name]["gpus"] == [200, 201]
    assert "Joined GPU Config" not in b.output()  # no second join: the stored credential
    # Neither agent ever had a database to open.
    assert not (b.folder / "data" / "gpuconfig.sqlite3").exists()
    assert "OperationalError" not in a.output() + b.output()
    checked = check_hosts_task()
    assert sorted(checked["answered"]) == sorted([a_name, b_name])


def test_a_host_that_answers_again_is_asked_for_a_fresh_report_on_its_queue(
    agents: Callable[..., Agent], staff_api: APIClient, member_api: APIClient, short_offline: int
) -> None:
    """A host cut off from GPU Config (its agent alive) comes back: the check sends
    ``agent.report`` to its queue, and what its compose file defines now shows up."""
    name, other = _name("c"), _name("d")
    agent = agents(name, gpus=1, services={"ai-clip": 1200})
    bystander = agents(other, gpus=1, services={"ai-ocr": 900})
    agent.start(join_token=_add_host(staff_api, name))
    bystander.start(join_token=_add_host(staff_api, other))
    # Both alive as GPU Config sees it (a slow start may outlast the offline limit).
    assert sorted(check_hosts_task()["answered"]) == sorted([name, other])
    # While it was cut off, the host's compose file gained a service...
    _compose_file(agent.folder / "compose.yml", {"ai-clip": 1200, "ai-florence": 1500})
    # ... and GPU Config wrote it offline (what the check does to a silent host).
    Host.objects.filter(name=name).update(status=HostStatus.OFFLINE)
    assert _hosts(member_api)[name]["state"] == "offline"

    checked = check_hosts_task()
    assert checked["back"] == [name]  # the bystander was online: nothing asked of it
    asked = time.monotonic()
    while time.monotonic() - asked < 20:
        if _hosts(member_api)[name]["services"] == ["ai-clip", "ai-florence"]:
            break
        time.sleep(0.2)
    print(f"\nfresh report over the host's queue arrived after {time.monotonic() - asked:.2f} s")
    hosts = _hosts(member_api)
    assert hosts[name]["services"] == ["ai-clip", "ai-florence"]
    assert hosts[name]["state"] == "online"
    # Only that host's agent ran the task: the bystander reported once, at its start.
    assert "Task agent.report[" in agent.output()
    assert "Task agent.report[" not in bystander.output()


def test_a_used_join_token_without_the_credential_file_fails_clearly(
    agents: Callable[..., Agent], staff_api: APIClient
) -> None:
    name = _name("e")
    agent = agents(name, gpus=1, services={"ai-clip": 1200})
    token = _add_host(staff_api, name)
    agent.start(join_token=token)
    agent.stop()
    (agent.folder / "state" / "credential").unlink()  # a lost state volume

    failed = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "run_agent"],
        cwd=ROOT,
        env={**agent.env, "GPUCONFIG_JOIN_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode != 0
    assert "GPU Config refused the join token" in failed.stderr
    assert "already used" in failed.stderr
    assert "credential file" in failed.stderr and "is lost" in failed.stderr
    assert "Traceback" not in failed.stderr


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"GPUCONFIG_URL": ""}, "GPUCONFIG_URL is not set"),
        ({"GPUCONFIG_URL": "ftp://example.org"}, "is not an http(s):// URL"),
        ({"GPUCONFIG_HOST_NAME": "Not A Name"}, "is not a host name"),
        ({"CELERY_BROKER_URL": ""}, "CELERY_BROKER_URL is not set"),
        ({"GPUCONFIG_JOIN_TOKEN": ""}, "no GPUCONFIG_JOIN_TOKEN"),
        ({"GPUCONFIG_URL": "http://127.0.0.1:1"}, "did not answer"),
    ],
)
def test_the_agent_says_in_one_line_what_is_missing(
    tmp_path: Path, change: dict[str, str], says: str
) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GPUCONFIG_", "DJANGO_", "CELERY_", "DATABASE_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": NO_DATABASE,
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/7",
            "GPUCONFIG_URL": "http://127.0.0.1:1",
            "GPUCONFIG_HOST_NAME": "box-f",
            "GPUCONFIG_JOIN_TOKEN": "gcj_not-a-real-token",
            "GPUCONFIG_DATA_DIR": str(tmp_path / "data"),
            **change,
        }
    )
    failed = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "run_agent"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode != 0
    assert says in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
