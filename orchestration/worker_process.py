"""Start a real Celery worker as a process of its own: for the integration tests, the browser
tests and the apply benchmark (which must not import test modules)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CeleryWorker:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker and its pool: what a crash or an OOM kill looks like."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_worker(
    env: Mapping[str, str], log: Path, *, queue: str = "celery", timeout_s: float = 60
) -> CeleryWorker:
    """Start ``celery -A config worker`` on ``queue`` with ``env``; wait until it is ready.

    First ``manage.py prepare_data_dir`` with the same ``env``, as bin/run does: the data
    folder it names may be new, and the settings only read it."""
    prepared = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "prepare_data_dir"],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if prepared.returncode != 0:
        raise RuntimeError(f"manage.py prepare_data_dir failed:\n{prepared.stderr[-3000:]}")
    celery = Path(sys.executable).parent / "celery"
    handle = log.open("wb")
    process = subprocess.Popen(
        [
            str(celery),
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=INFO",
            f"--queues={queue}",
            f"--hostname=gpuconfig-test-{os.getpid()}-{time.monotonic_ns()}@%h",
        ],
        cwd=ROOT,
        env=dict(env),
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so kill() reaches the whole worker
    )
    worker = CeleryWorker(process, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if " ready." in worker.output():
            return worker
        if process.poll() is not None:
            raise RuntimeError(f"the Celery worker exited early:\n{worker.output()[-3000:]}")
        time.sleep(0.2)
    worker.kill()
    raise RuntimeError(f"the Celery worker did not become ready:\n{worker.output()[-3000:]}")
