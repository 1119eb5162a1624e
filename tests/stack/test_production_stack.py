"""The production stack for real: build the images, bring up docker-compose.prod.yml with
podman-compose, and use GPU Config only over HTTP, as an operator's browser or script would.

What is real: the images (built here from Debian packages when no registry answers), gunicorn,
the Celery worker, PostgreSQL and Redis in containers, the host's podman driven from inside
the worker through its API socket, and the five AI services (busybox stand-ins that serve the
compose file's own health checks). What stands in: the GPUs (the simulated reference file
inside the app, and a CDI spec that gives podman `nvidia.com/gpu=0` and `=1`).
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestration.tests.containers import installed_cdi_spec, missing_tools, podman_environment

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.prod.yml"
AI_SERVICES = ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment")
APP_SERVICES = ("gpuconfig-web", "gpuconfig-worker", "gpuconfig-postgres", "gpuconfig-redis")
BUILD_TIMEOUT_S = 900
UP_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    """One compose project of the production file, in a folder of its own."""

    folder: Path
    env: dict[str, str]
    port: int
    admin_password: str
    api_socket: subprocess.Popen[bytes] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def project(self) -> str:
        return self.folder.name

    def compose(self, *args: str, timeout_s: float = UP_TIMEOUT_S) -> str:
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "podman-compose"),
                "-f",
                str(self.folder / "docker-compose.prod.yml"),
                *args,
            ],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"podman-compose {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def podman(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def container(self, service: str) -> dict[str, Any]:
        ids = self.podman(
            "ps",
            "-a",
            "-q",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        ).split()
        assert len(ids) == 1, f"expected one container for {service}, found {ids}"
        return json.loads(self.podman("inspect", ids[0]))[0]

    def logs(self, *services: str) -> str:
        """The last lines of each service's log, for failure messages."""
        return "\n".join(
            f"--- {name}:\n"
            + self.podman("logs", "--tail", "30", f"{self.project}_{name}_1", check=False)
            for name in services
        )

    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout_s: float = UP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base_url() + "/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last = str(exc)
            time.sleep(1)
        logs = self.podman("logs", "--tail", "40", f"{self.project}_gpuconfig-web_1", check=False)
        raise AssertionError(f"/health did not answer 200 within {timeout_s} s ({last}):\n{logs}")


class Browser:
    """A logged-in HTTP session (cookies + CSRF), talking to gunicorn only."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def _csrf(self) -> str:
        return next(c.value or "" for c in self.jar if c.name == "csrftoken")

    def login(self, username: str, password: str) -> None:
        page = self.opener.open(self.base_url + "/accounts/login/", timeout=30).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, "the login page has no CSRF token"
        body = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)}
        ).encode()
        request = urllib.request.Request(
            self.base_url + "/accounts/login/", data=body, headers={"Referer": self.base_url + "/"}
        )
        landed = self.opener.open(request, timeout=30)
        assert "/accounts/login/" not in landed.geturl(), "login was refused"

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={
                "Accept": "application/json",
                "Content-Type": "application/json",
                "X-CSRFToken": self._csrf(),
                "Referer": self.base_url + "/",
            },
        )
        try:
            with self.opener.open(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def text(self, path: str) -> tuple[int, str]:
        with self.opener.open(self.base_url + path, timeout=30) as response:
            return response.status, response.read().decode()


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the production stack test needs root (rootful podman, CDI specs in /var/run/cdi)"
    missing = missing_tools()
    if missing:
        return f"needs {', '.join(missing)} (apt-get install podman runc busybox-static)"
    return None


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    work = Path(tempfile.mkdtemp(prefix="gpuconfig-stack-"))
    # The folder's name is the compose project's name; unique, so runs never collide.
    folder = work / f"aisystem{secrets.token_hex(3)}"
    folder.mkdir()
    env = {**podman_environment(work), "HOME": str(work)}
    socket_path = work / "podman.sock"
    port = _free_port()
    admin_password = secrets.token_urlsafe(16)
    started = time.monotonic()

    build = subprocess.run(
        [
            str(ROOT / "deploy" / "build-local-images.sh"),
            "--env-file",
            str(folder / ".env"),
            "--ai-standins",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert build.returncode == 0, f"building the images failed:\n{build.stderr[-4000:]}"
    built = time.monotonic()

    shutil.copy(COMPOSE, folder / "docker-compose.prod.yml")
    # The worker runs podman-compose on this folder and reads .env as the app's non-root
    # user, through the socket's group (the guide: chgrp podman-api .env; chmod 640 .env).
    (folder / ".env").chmod(0o640)
    with (folder / ".env").open("a", encoding="utf-8") as dotenv:
        dotenv.write(
            "\n".join(
                [
                    f"DJANGO_SECRET_KEY={secrets.token_urlsafe(50)}",
                    f"POSTGRES_PASSWORD={secrets.token_urlsafe(16)}",
                    f"GPUCONFIG_ADMIN_PASSWORD={admin_password}",
                    f"GPUCONFIG_HOST_PROJECT_DIR={folder}",
                    f"GPUCONFIG_PORT={port}",
                    # A host without GPUs: the simulated reference pair inside the app, and no
                    # CDI device for GPU Config's own containers.
                    "GPUCONFIG_SIMULATED_GPUS=/app/devices/simulated/reference-gpus.json",
                    "GPUCONFIG_GPU_DEVICE=/dev/null",
                    f"PODMAN_SOCKET={socket_path}",
                    f"PODMAN_SOCKET_GID={os.getgid()}",
                ]
            )
            + "\n"
        )

    stack = Stack(folder=folder, env=env, port=port, admin_password=admin_password)
    stack.timings["build_s"] = built - started
    # The host's podman API socket (systemctl enable --now podman.socket on a normal host).
    # Its log (systemd timer complaints on a host without systemd) goes to a file, not the run's.
    service_log = (work / "podman-service.log").open("wb")
    stack.api_socket = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
        env=env,
        stdout=service_log,
        stderr=subprocess.STDOUT,
    )
    try:
        with installed_cdi_spec():
            for _ in range(100):
                if socket_path.exists():
                    break
                time.sleep(0.1)
            # What the guide's systemd drop-in (SocketGroup=, SocketMode=0660) does on a real
            # host: the app's non-root user reaches the socket through its group.
            socket_path.chmod(0o660)
            up = time.monotonic()
            stack.compose("up", "-d")
            stack.wait_healthy()
            stack.timings["up_s"] = time.monotonic() - up
            yield stack
    finally:
        try:
            stack.compose("down", "-v", "-t", "2", timeout_s=300)
        except AssertionError as exc:
            print(f"teardown: {exc}")
        stack.podman("network", "rm", "-f", f"{stack.project}_default", check=False)
        for volume in ("gpuconfig-postgres", "gpuconfig-config"):
            stack.podman("volume", "rm", "-f", f"{stack.project}_{volume}", check=False)
        stack.api_socket.terminate()
        stack.api_socket.wait(timeout=30)
        service_log.close()
        shutil.rmtree(work, ignore_errors=True)
        print(f"stack timings: {stack.timings}")


def _wait_for_run(browser: Browser, run_id: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code, body = browser.json("GET", f"/api/system/gpu-config/status?run={run_id}")
        assert code == 200, body
        run = body.get("run") or body
        if run["status"] not in ("queued", "running", "rolling_back"):
            return body
        time.sleep(1)
    raise AssertionError(f"apply run {run_id} did not finish within {timeout_s} s")


def _save_and_apply(browser: Browser, assignments: list[dict[str, Any]]) -> dict[str, Any]:
    code, config = browser.json("GET", "/api/system/gpu-config")
    assert code == 200, config
    code, saved = browser.json(
        "PUT",
        "/api/system/gpu-config",
        {"strategy": "manual", "version": config["version"], "assignments": assignments},
    )
    assert code == 200, saved
    code, accepted = browser.json("POST", "/api/system/gpu-config/apply", {})
    assert code == 202, accepted
    return _wait_for_run(browser, accepted["run_id"])


def _device_of(container: dict[str, Any]) -> list[str]:
    """The CDI devices podman was asked for, from the container's create command."""
    command = container["Config"].get("CreateCommand") or []
    return [command[i + 1] for i, arg in enumerate(command[:-1]) if arg == "--device"]


def _environment(container: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container["Config"]["Env"])


def test_operator_moves_a_service_over_http_and_the_stack_keeps_it_across_a_restart(
    stack: Stack,
) -> None:
    browser = Browser(stack.base_url())
    browser.login("admin", stack.admin_password)

    # Static files are served by the app itself with DEBUG off (whitenoise, hashed names).
    status, page = browser.text("/settings/gpu/")
    assert status == 200 and "GPU Configuration" in page
    stylesheet = re.search(r'href="(/static/[^"]+\.css)"', page)
    assert stylesheet, "the page links no stylesheet"
    assert browser.text(stylesheet.group(1))[0] == 200

    code, gpus = browser.json("GET", "/api/system/gpus")
    assert code == 200
    shown = {gpu["index"]: gpu for gpu in gpus["gpus"]}
    assert [shown[0]["name"], shown[1]["name"]] == ["NVIDIA RTX A5500", "NVIDIA RTX A400"]

    # First Apply: every AI service gets its GPU (none had one under the bare compose file).
    baseline = [
        {"service": "ai-llm", "gpu_index": 0},
        {"service": "ai-yolo26", "gpu_index": 0},
        {"service": "ai-florence", "gpu_index": 0},
        {"service": "ai-clip", "gpu_index": 0},
        {"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 2.5},
    ]
    first = _save_and_apply(browser, baseline)
    assert (first.get("run") or first)["status"] == "succeeded", json.dumps(first, indent=1)[
        -3000:
    ] + stack.logs("gpuconfig-worker")
    before = {name: stack.container(name)["Id"] for name in AI_SERVICES + APP_SERVICES}

    # The move: CLIP to the A400.
    moved = [dict(item) for item in baseline]
    moved[3]["gpu_index"] = 1
    apply_started = time.monotonic()
    second = _save_and_apply(browser, moved)
    stack.timings["apply_one_move_s"] = time.monotonic() - apply_started
    assert (second.get("run") or second)["status"] == "succeeded", json.dumps(second, indent=1)[
        -3000:
    ] + stack.logs("gpuconfig-worker")

    # On the host: exactly CLIP was recreated, on CDI device 1, with GPU 1's UUID as the web
    # showed it (the worker verified against the same inventory); nothing else was touched,
    # GPU Config's own containers included.
    clip = stack.container("ai-clip")
    assert clip["Id"] != before["ai-clip"]
    assert _device_of(clip) == ["nvidia.com/gpu=1"]
    clip_env = _environment(clip)
    assert clip_env["STANDIN_GPU"] == "1"  # what podman really resolved through the CDI spec
    assert clip_env["GPUCONFIG_GPU_UUID"] == shown[1]["uuid"]
    assert clip["State"]["Status"] == "running"
    for name in (*AI_SERVICES, *APP_SERVICES):
        if name != "ai-clip":
            assert stack.container(name)["Id"] == before[name], f"{name} was recreated"

    code, versions = browser.json("GET", "/api/system/gpu-config/versions")
    assert code == 200
    history = versions["versions"] if isinstance(versions, dict) else versions
    assert len(history) >= 2

    # Restart the whole stack: configuration and history live in the PostgreSQL volume.
    restart_started = time.monotonic()
    stack.compose("down", "-t", "2", timeout_s=300)
    stack.compose("up", "-d")
    stack.wait_healthy()
    stack.timings["restart_s"] = time.monotonic() - restart_started

    browser = Browser(stack.base_url())
    browser.login("admin", stack.admin_password)
    code, config = browser.json("GET", "/api/system/gpu-config")
    assert code == 200
    placed = {row["service"]: row["gpu_index"] for row in config["assignments"]}
    assert placed["ai-clip"] == 1 and placed["ai-llm"] == 0
    code, after = browser.json("GET", "/api/system/gpu-config/versions")
    assert (after["versions"] if isinstance(after, dict) else after) == history
