"""Helpers for the production tests: the documented environment, manage.py, gunicorn, HTTP.

Everything here starts the real thing in a subprocess (manage.py, gunicorn) with a clean
environment, because production settings are read once, at import, from the environment.
"""

from __future__ import annotations

import http.client
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ENV_EXAMPLE = ROOT / "deploy" / "gpuconfig.env.example"
GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
REDIS_URL = os.environ.get("GPUCONFIG_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

# Variables that would leak the developer's own configuration into a subprocess.
_APP_PREFIXES = ("DJANGO_", "GPUCONFIG_", "GUNICORN_", "CELERY_", "POSTGRES_", "DATABASE_URL")

needs_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="production mode runs on PostgreSQL only; bin/test's PostgreSQL pass runs this",
)


def clean_env() -> dict[str, str]:
    """This process's environment without any of the app's own variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_APP_PREFIXES)}


def read_env_file(path: Path) -> dict[str, str]:
    """The active ``KEY=value`` lines of an env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def database_url(settings_dict: Mapping[str, Any]) -> str:
    """A DATABASE_URL for the database pytest-django created (the test database)."""
    user = quote(str(settings_dict["USER"] or ""), safe="")
    password = quote(str(settings_dict["PASSWORD"] or ""), safe="")
    auth = f"{user}:{password}@" if password else f"{user}@"
    host = settings_dict["HOST"] or "127.0.0.1"
    port = settings_dict["PORT"] or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


def production_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The documented production environment (deploy/gpuconfig.env.example) made runnable here.

    Only what the operator fills in or what names the stack's own hosts is replaced: the
    secret key, and the database, broker and cache URLs, which point at this machine's
    PostgreSQL test database and Redis.
    """
    env = clean_env()
    env.update(read_env_file(ENV_EXAMPLE))
    env.update(
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=database_url(connection.settings_dict),
        CELERY_BROKER_URL=REDIS_URL,
        GPUCONFIG_CACHE_URL=REDIS_URL,
        GPUCONFIG_DATA_DIR=str(data_dir),
    )
    env.update(overrides)
    return env


def manage(*args: str, env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``manage.py ARGS`` in a fresh interpreter and capture what an operator would see."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class Browser:
    """A minimal HTTP client: no redirects followed, no decompression, cookies kept."""

    host: str
    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None
    ) -> Response:
        all_headers = {"Host": f"{self.host}:{self.port}", **(headers or {})}
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=all_headers)
            raw = conn.getresponse()
            response = Response(raw.status, raw.headers, raw.read())
        finally:
            conn.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return response

    def get(self, path: str, **headers: str) -> Response:
        return self.request(
            "GET", path, headers={k.replace("_", "-"): v for k, v in headers.items()}
        )

    def log_in(self, username: str, password: str) -> Response:
        """Log in through the real login form (CSRF cookie and token included)."""
        self.get("/accounts/login/")
        form = {
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": self.cookies["csrftoken"],
        }
        return self.request(
            "POST",
            "/accounts/login/",
            body=urlencode(form).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Referer": f"http://{self.host}:{self.port}/accounts/login/",
            },
        )


@contextmanager
def running_gunicorn(
    env: Mapping[str, str], log_dir: Path, *, workers: int = 1, threads: int = 4
) -> Iterator[Browser]:
    """gunicorn with the image's configuration on a free port, until /health answers 200."""
    port = free_port()
    log_path = log_dir / f"gunicorn-{port}.log"
    process_env = {
        **env,
        "GPUCONFIG_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(workers),
        "GUNICORN_THREADS": str(threads),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "--config", str(GUNICORN_CONFIG), "config.wsgi"],
            cwd=ROOT,
            env=process_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    browser = Browser("127.0.0.1", port)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if browser.get("/health").status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not answer /health in 30 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        browser.cookies.clear()
        yield browser
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
