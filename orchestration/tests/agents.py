"""A GPU host's agent as the tests run it: ``manage.py run_agent`` in a process of its own
(its own process group), with an environment of its own and no database of GPU Config's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from config.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def celery_on(url: str, *, results: bool = False) -> Iterator[None]:
    """This process's Celery app on the broker at ``url`` (and its result backend, with
    ``results``) for the duration. Besides the connection pool (``close``), what Celery builds
    once and keeps is dropped: the producer pool that remote control (ping) publishes through,
    and the result backend. Both stay bound to what an earlier test used first (the
    filesystem broker, no backend), and a ping would reach no agent, an answer never come."""
    previous = celery_app.conf.broker_url, celery_app.conf.result_backend

    def reset() -> None:
        celery_app.close()
        celery_app.amqp._producer_pool = None
        # The result backend is built once, from the URL in force then (a disabled one, if an
        # earlier test touched it first): drop it, so the next use builds it from ``url``.
        celery_app._backend_cache = None
        vars(celery_app._local).pop("backend", None)

    celery_app.conf.broker_url = url
    if results:
        celery_app.conf.result_backend = url
    reset()
    try:
        yield
    finally:
        celery_app.conf.broker_url, celery_app.conf.result_backend = previous
        reset()


def agent_env(name: str, folder: Path, *, url: str, broker: str, **settings: str) -> dict[str, str]:
    """The agent's environment: this one's, less GPU Config's own settings, plus the agent's
    (GPU Config's URL, the broker, its host name and state folder, and ``settings``)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GPUCONFIG_", "DJANGO_", "CELERY_", "DATABASE_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "CELERY_BROKER_URL": broker,
            "GPUCONFIG_URL": url,
            "GPUCONFIG_HOST_NAME": name,
            "GPUCONFIG_DATA_DIR": str(folder / "data"),
            "GPUCONFIG_AGENT_STATE_DIR": str(folder / "state"),
            **settings,
        }
    )
    return env


@dataclass
class Agent:
    name: str
    folder: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "agent.log"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self, *, join_token: str = "", timeout_s: float = 60) -> None:
        env = {**self.env, "GPUCONFIG_JOIN_TOKEN": join_token}
        self.log.unlink(missing_ok=True)  # this start's output only
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), "run_agent"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() reaches all of it
            )
        ready = f"agent@{self.name} ready."
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready in self.output():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"agent {self.name} exited:\n{self.output()[-3000:]}")
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"agent {self.name} never became ready:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: the host's power cut, as GPU Config sees it."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
