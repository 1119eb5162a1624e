"""The production stack for real: build the images, bring up docker-compose.prod.yml with
podman-compose, and use GPU Config only over HTTP, as an operator's browser or script would.

What is real: the images (built here from Debian packages when no registry answers), gunicorn,
the Celery worker, PostgreSQL and Redis in containers, the host's podman driven from inside
the worker through its API socket, and the five AI services (busybox stand-ins that serve the
compose file's own health checks). What stands in: the GPUs (the simulated reference file
inside the app, and a CDI spec that gives podman `nvidia.com/gpu=0` and `=1`).
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack.stack import (
    AI_SERVICES,
    APP_SERVICES,
    UP_TIMEOUT_S,
    Browser,
    Stack,
    production_stack,
)
from tests.stack.stack import device_of as _device_of
from tests.stack.stack import environment as _environment
from tests.stack.stack import save_and_apply as _save_and_apply

pytestmark = pytest.mark.stack

SLOW_CLIENTS = 150


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with production_stack() as running:
        yield running


def _placement(stack: Stack) -> dict[str, list[str]]:
    return {name: _device_of(stack.container(name)) for name in AI_SERVICES}


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

    # The podman API service restarts (an upgrade of podman, systemctl restart): it makes a new
    # socket file. The stack mounts the socket's folder, so GPU Config sees the new one.
    stack.stop_api_service()
    stack.start_api_service()

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
    applied = _placement(stack)
    assert applied == {
        "ai-llm": ["nvidia.com/gpu=0"],
        "ai-yolo26": ["nvidia.com/gpu=0"],
        "ai-florence": ["nvidia.com/gpu=0"],
        "ai-clip": ["nvidia.com/gpu=1"],
        "ai-enrichment": ["nvidia.com/gpu=1"],
    }

    code, versions = browser.json("GET", "/api/system/gpu-config/versions")
    assert code == 200
    history = versions["versions"] if isinstance(versions, dict) else versions
    assert len(history) >= 2

    # An operator's plain down + up -d (a reboot, an upgrade, a colleague), with nothing but
    # the stack's .env: every AI service comes back on its GPU (the compose file includes the
    # generated override), and configuration and history live in the PostgreSQL volume.
    restart_started = time.monotonic()
    stack.compose("down", "-t", "2", timeout_s=300)
    stack.compose("up", "-d")
    stack.wait_healthy()
    stack.timings["restart_s"] = time.monotonic() - restart_started
    assert _placement(stack) == applied
    assert _environment(stack.container("ai-enrichment"))["VRAM_BUDGET_GB"] == "2.5"

    browser = Browser(stack.base_url())
    browser.login("admin", stack.admin_password)
    code, config = browser.json("GET", "/api/system/gpu-config")
    assert code == 200
    placed = {row["service"]: row["gpu_index"] for row in config["assignments"]}
    assert placed["ai-clip"] == 1 and placed["ai-llm"] == 0
    code, after = browser.json("GET", "/api/system/gpu-config/versions")
    assert (after["versions"] if isinstance(after, dict) else after) == history


def test_every_service_is_bounded_and_only_the_proxy_is_published(stack: Stack) -> None:
    for name in (*AI_SERVICES, *APP_SERVICES):
        host = stack.container(name)["HostConfig"]
        assert host["Memory"] > 0, f"{name} has no memory limit"
        assert host["PidsLimit"] > 0, f"{name} has no pids limit"
        assert host["LogConfig"]["Size"], f"{name}'s log is not capped"
        published = {port for port, binds in (host.get("PortBindings") or {}).items() if binds}
        if name == "gpuconfig-proxy":
            assert published == {"8080/tcp", "8443/tcp"}
        else:
            assert not published, f"{name} publishes {published}"

    # The worker's health check runs for real (podman 4.3 leaves $HOSTNAME empty in exec).
    worker = f"{stack.project}_gpuconfig-worker_1"
    check = subprocess.run(
        ["podman", "healthcheck", "run", worker],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, f"worker unhealthy: {check.stdout} {check.stderr}"
    health = stack.podman("inspect", "--format", "{{.State.Health.Status}}", worker).strip()
    assert health == "healthy"


def _raw_request(port: int, request: bytes, timeout_s: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _health_latency(port: int) -> float:
    started = time.perf_counter()
    answer = _raw_request(
        port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    elapsed = time.perf_counter() - started
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    return elapsed


def test_the_proxy_holds_slow_clients_limits_bodies_and_forwards_the_client_address(
    stack: Stack,
) -> None:
    # The client's X-Forwarded-For is replaced by the address the proxy saw, not appended to.
    marker = secrets.token_hex(6)
    answer = _raw_request(
        stack.port,
        f"GET /health?probe={marker} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "X-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    logged = [
        line
        for line in stack.podman("logs", f"{stack.project}_gpuconfig-web_1").splitlines()
        if marker in line
    ]
    assert len(logged) == 1, logged
    forwarded = re.search(r"fwd=(\S+) proto=(\S+)", logged[0])
    assert forwarded, logged[0]
    assert "203.0.113.9" not in forwarded.group(1) and "," not in forwarded.group(1), logged[0]
    assert forwarded.group(2) == "http"

    # Bodies over the app's limit stop at the proxy (256 KiB; 2 MiB for the backup upload).
    big = b"x" * (300 * 1024)
    answer = _raw_request(
        stack.port,
        b"POST /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + f"Content-Length: {len(big)}\r\n\r\n".encode()
        + big,
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    answer = _raw_request(
        stack.port,
        b"POST /api/system/gpu-config/import HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(big)}\r\n\r\n".encode()
        + big,
    )
    # The import API takes a backup (up to 2 MiB) as its body: through the proxy and the app,
    # refused for who sent it (no login), not for its size.
    assert answer.startswith(b"HTTP/1.1 403"), answer[:300]

    # 150 slow clients (issue 17): each sends one header line every 3 s and never finishes.
    idle = [_health_latency(stack.port) for _ in range(10)]
    slow: list[socket.socket] = []
    try:
        for number in range(SLOW_CLIENTS):
            conn = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
            conn.sendall(
                f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-{number}: 1\r\n".encode()
            )
            slow.append(conn)
        loaded = []
        for round_ in range(10):
            loaded.append(_health_latency(stack.port))
            if round_ % 3 == 2:
                for number, conn in enumerate(slow):
                    conn.sendall(f"X-Still-{number}: {round_}\r\n".encode())
            time.sleep(0.3)
        stack.timings["health_idle_median_s"] = sorted(idle)[len(idle) // 2]
        stack.timings["health_150_slow_median_s"] = sorted(loaded)[len(loaded) // 2]
        stack.timings["health_150_slow_max_s"] = max(loaded)
        print(f"/health through the proxy: idle {idle}, with {SLOW_CLIENTS} slow clients {loaded}")
        # Every /health answered 200 within its 10 s socket timeout (_health_latency): without
        # the proxy, gunicorn's 16 threads would all be held by 16 such clients and it would not
        # answer at all. The figures go to docs/benchmarks.md, not into an assertion on time
        # (one answer of ten took 1.01 s in a CI run on this shared machine); the median only
        # has to show the proxy is not queueing every request behind the slow ones.
        assert sorted(loaded)[len(loaded) // 2] < 1.0, loaded

        # The proxy cuts them off: the whole request head must arrive within 10 s.
        cut_off = 0
        deadline = time.monotonic() + 20
        for conn in slow:
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = conn.recv(4096)
            except ConnectionResetError:
                data = b""
            except TimeoutError:
                continue
            if data == b"" or data.startswith(b"HTTP/1.1 408"):
                cut_off += 1
        assert cut_off == SLOW_CLIENTS, (
            f"only {cut_off} of {SLOW_CLIENTS} slow clients were cut off"
        )
    finally:
        for conn in slow:
            conn.close()


def test_the_proxy_terminates_tls_with_the_mounted_certificate(stack: Stack) -> None:
    """GPUCONFIG_HTTPS=1: TLS on the HTTPS port with GPUCONFIG_TLS_DIR's certificate, and
    the plain port redirects there. Only the proxy is recreated (runs last)."""
    tls = stack.folder / "tls"
    tls.mkdir(exist_ok=True)
    made = subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    https_env = {**stack.env, "GPUCONFIG_HTTPS": "1"}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "podman-compose"),
            "-f",
            str(stack.folder / "docker-compose.prod.yml"),
            "up", "-d", "--no-deps", "--force-recreate", "gpuconfig-proxy",
        ],
        cwd=stack.folder,
        env=https_env,
        capture_output=True,
        text=True,
        timeout=UP_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    # First through nginx from inside the container (its TLS port on the loopback there):
    # a failure below then says whether the proxy or the published port did not answer. CI
    # once saw the published port time out for 30 s after the recreate.
    proxy = f"{stack.project}_gpuconfig-proxy_1"
    inside = ["exec", proxy, "curl", "-ksS", "-o", "/dev/null", "-w", "%{http_code}"]
    deadline = time.monotonic() + 60
    while stack.podman(*inside, "https://127.0.0.1:8443/health", check=False) != "200":
        assert time.monotonic() < deadline, (
            "nginx did not answer on its TLS port within 60 s:\n" + stack.logs("gpuconfig-proxy")
        )
        time.sleep(0.5)

    context = ssl.create_default_context(cafile=str(tls / "cert.pem"))
    deadline = time.monotonic() + 60
    attempts: list[str] = []
    while True:
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{stack.https_port}/health", timeout=5, context=context
            ) as response:
                assert response.status == 200
                break
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            attempts.append(repr(error))
            if time.monotonic() > deadline:
                within = stack.podman(*inside, "https://127.0.0.1:8443/health", check=False)
                raise AssertionError(
                    f"the published TLS port {stack.https_port} did not answer within 60 s "
                    f"({len(attempts)} tries, last {attempts[-1]}); inside the container "
                    f"https://127.0.0.1:8443/health answers {within!r}:\n"
                    + stack.podman("port", proxy, check=False)
                    + stack.logs("gpuconfig-proxy")
                ) from error
            time.sleep(0.5)
    answer = _raw_request(
        stack.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 308"), answer[:200]
    assert f"Location: https://127.0.0.1:{stack.https_port}/health".encode() in answer
