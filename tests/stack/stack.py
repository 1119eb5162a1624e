"""The production stack for the stack tests: build the images, bring up
docker-compose.prod.yml with podman-compose in a folder of its own (the compose project),
and talk to GPU Config over HTTP only (`Browser`), as an operator's browser or script would.

What is real: the images (built here from Debian packages when no registry answers), gunicorn,
the Celery worker, PostgreSQL and Redis in containers, the host's podman driven from inside
the worker through its API socket, and the AI services (busybox stand-ins that serve the
compose file's own health checks). What stands in: the GPUs (simulated reference files
inside the app, and a CDI spec that gives podman `nvidia.com/gpu=0` and `=1`).
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestration.tests.containers import installed_cdi_spec, missing_tools, podman_environment

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.prod.yml"
AI_SERVICES = ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment")
APP_SERVICES = (
    "gpuconfig-proxy",
    "gpuconfig-web",
    "gpuconfig-worker",
    "gpuconfig-postgres",
    "gpuconfig-redis",
)
OVERRIDE = "config/docker-compose.gpu-override.yml"
APP_UID = 1000  # the image's gpuconfig user
BUILD_TIMEOUT_S = 900
UP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    """One compose project of the production file, in a folder of its own."""

    folder: Path
    env: dict[str, str]
    port: int
    https_port: int
    admin_password: str
    socket_path: Path
    service_log: Path
    # The compose files of every command, the production file first (a local override
    # after it, as an operator adds one), and the address the proxy is published on.
    compose_files: tuple[str, ...] = ("docker-compose.prod.yml",)
    address: str = "127.0.0.1"
    api_socket: subprocess.Popen[bytes] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def project(self) -> str:
        return self.folder.name

    def compose(self, *args: str, timeout_s: float = UP_TIMEOUT_S) -> str:
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "podman-compose"),
                *[arg for name in self.compose_files for arg in ("-f", str(self.folder / name))],
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
        """Each service's state and the last lines of its log (stdout and stderr: celery and
        gunicorn log to stderr), for failure messages."""
        parts = []
        for name in services:
            container = f"{self.project}_{name}_1"
            state = self.podman("ps", "-a", "--filter", f"name={container}", check=False)
            result = subprocess.run(
                ["podman", "logs", "--tail", "40", container],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            parts.append(f"--- {name}:\n{state}{result.stdout}{result.stderr}")
        return "\n".join(parts)

    def base_url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def start_api_service(self) -> None:
        """The host's podman API socket (systemctl enable --now podman.socket on a normal
        host); its log (timer complaints on a host without systemd) goes to a file."""
        self.socket_path.unlink(missing_ok=True)
        with self.service_log.open("ab") as log:
            self.api_socket = subprocess.Popen(
                ["podman", "system", "service", "--time=0", f"unix://{self.socket_path}"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for _ in range(100):
            if self.socket_path.exists():
                break
            time.sleep(0.1)
        # What the guide's systemd drop-in (SocketGroup=, SocketMode=0660) does on a real
        # host: the app's non-root user reaches the socket through its group.
        self.socket_path.chmod(0o660)

    def stop_api_service(self) -> None:
        if self.api_socket is not None:
            self.api_socket.terminate()
            self.api_socket.wait(timeout=30)
            self.api_socket = None

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


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the production stack test needs root (rootful podman, CDI specs in /var/run/cdi)"
    missing = missing_tools()
    if missing:
        return f"needs {', '.join(missing)} (apt-get install podman runc busybox-static)"
    return None


@contextlib.contextmanager
def production_stack(
    *,
    extra_env: Sequence[str] = (),
    local_override: str | None = None,
    address: str = "127.0.0.1",
) -> Iterator[Stack]:
    """Build the images and bring up docker-compose.prod.yml in a folder of its own, as the
    guide installs it; down and removed afterwards.

    ``extra_env``: more lines for the stack's .env. ``local_override``: a local compose file
    the operator keeps beside the production file (docker-compose.local.yml), given after it
    with -f on every command. ``address``: where the proxy is published (GPUCONFIG_BIND_ADDRESS).
    """
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    work = Path(tempfile.mkdtemp(prefix="gpuconfig-stack-"))
    # The folder's name is the compose project's name; unique, so runs never collide.
    folder = work / f"aisystem{secrets.token_hex(3)}"
    folder.mkdir()
    env = {**podman_environment(work), "HOME": str(work)}
    # The socket in a folder of its own: the stack mounts the folder (PODMAN_SOCKET_DIR).
    socket_dir = work / "podman-api"
    socket_dir.mkdir()
    port, https_port = free_port(), free_port()
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

    # The guide's install: the compose file, the proxy's configuration beside it, and the
    # folder for the generated override, owned by the app's user, with an empty override.
    shutil.copy(COMPOSE, folder / "docker-compose.prod.yml")
    shutil.copytree(ROOT / "deploy" / "proxy", folder / "deploy" / "proxy")
    (folder / "config").mkdir()
    (folder / OVERRIDE).write_text("services: {}\n", encoding="utf-8")
    for path in (folder / "config", folder / OVERRIDE):
        os.chown(path, APP_UID, APP_UID)
    compose_files: tuple[str, ...] = ("docker-compose.prod.yml",)
    if local_override is not None:
        (folder / "docker-compose.local.yml").write_text(local_override, encoding="utf-8")
        compose_files += ("docker-compose.local.yml",)
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
                    f"GPUCONFIG_BIND_ADDRESS={address}",
                    f"GPUCONFIG_PORT={port}",
                    f"GPUCONFIG_HTTPS_PORT={https_port}",
                    # What keeps the GPUs across a plain down + up -d (the compose file's include).
                    f"GPUCONFIG_GPU_OVERRIDE={OVERRIDE}",
                    # A host without GPUs: the simulated reference pair inside the app, and no
                    # CDI device for GPU Config's own containers.
                    "GPUCONFIG_SIMULATED_GPUS=/app/devices/simulated/reference-gpus.json",
                    "GPUCONFIG_GPU_DEVICE=/dev/null",
                    f"PODMAN_SOCKET_DIR={socket_dir}",
                    f"PODMAN_SOCKET_GID={os.getgid()}",
                    # gunicorn logs the forwarded client address: the test reads it.
                    "GUNICORN_ACCESS_LOG=1",
                    *extra_env,
                ]
            )
            + "\n"
        )

    stack = Stack(
        folder=folder,
        env=env,
        port=port,
        https_port=https_port,
        admin_password=admin_password,
        socket_path=socket_dir / "podman.sock",
        service_log=work / "podman-service.log",
        compose_files=compose_files,
        address=address,
    )
    stack.timings["build_s"] = built - started
    stack.start_api_service()
    try:
        with installed_cdi_spec():
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
        for network in ("default", "gpuconfig-front"):
            stack.podman("network", "rm", "-f", f"{stack.project}_{network}", check=False)
        stack.podman("volume", "rm", "-f", f"{stack.project}_gpuconfig-postgres", check=False)
        stack.stop_api_service()
        shutil.rmtree(work, ignore_errors=True)
        print(f"stack timings: {stack.timings}")


def wait_for_run(browser: Browser, run_id: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code, body = browser.json("GET", f"/api/system/gpu-config/status?run={run_id}")
        assert code == 200, body
        run = body.get("run") or body
        if run["status"] not in ("queued", "running", "rolling_back"):
            return body
        time.sleep(1)
    raise AssertionError(f"apply run {run_id} did not finish within {timeout_s} s")


def save_and_apply(browser: Browser, assignments: list[dict[str, Any]]) -> dict[str, Any]:
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
    return wait_for_run(browser, accepted["run_id"])


def device_of(container: dict[str, Any]) -> list[str]:
    """The CDI devices podman was asked for, from the container's create command."""
    command = container["Config"].get("CreateCommand") or []
    return [command[i + 1] for i, arg in enumerate(command[:-1]) if arg == "--device"]


def environment(container: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container["Config"]["Env"])
