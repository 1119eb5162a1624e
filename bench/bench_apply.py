"""Apply & Restart against real containers, side by side with the bare podman-compose command.

For 1, 3 and 5 moved services: the wall time from POST /apply to the run's final state (real
Celery worker on Redis, real podman containers, stand-in CDI GPUs), next to the time of the
bare `podman-compose up -d --force-recreate --no-deps <same services>` run by hand, in the
same run, alternating, median of several rounds. Then a no-op apply (nothing changed).

    .venv/bin/python -m bench.bench_apply         (needs podman, runc, busybox-static, root,
                                                    Redis on 127.0.0.1:6379)
Targets: apply <= 1.2x the bare command; no-op apply < 1 s with zero containers recreated.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
ORDER = ["ai-clip", "ai-florence", "ai-yolo26", "ai-llm", "ai-enrichment"]
FINAL = {"succeeded", "rolled_back", "rollback_failed", "failed", "interrupted"}


def _bench_database(data: Path) -> str:
    """A fresh PostgreSQL database, as in production; SQLite when none is reachable."""
    url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gpuconfig_bench")
    try:
        import psycopg

        server, name = url.rsplit("/", 1)
        with psycopg.connect(f"{server}/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        print(f"database: PostgreSQL ({name})")
        return url
    except Exception as exc:  # any failure: fall back, and say so
        print(f"database: SQLite (PostgreSQL unavailable: {exc})")
        return f"sqlite:///{data / 'bench.sqlite3'}"


def main() -> int:
    from orchestration.demo import DemoUnavailable, demo_down, demo_up

    data = Path(tempfile.mkdtemp(prefix="gpuconfig-bench-"))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_ALLOWED_HOSTS": "testserver",
            "DJANGO_SECRET_KEY": "bench-only-" + "x" * 50,  # nothing here outlives the run
            "GPUCONFIG_DATA_DIR": str(data),
            "DATABASE_URL": _bench_database(data),
            "CELERY_BROKER_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
            "GPUCONFIG_SIMULATED_GPUS": str(ROOT / "devices/simulated/reference-gpus.json"),
        }
    )
    try:
        setup = demo_up(
            base_compose=ROOT / "docker-compose.prod.yml",
            gpu_indexes=[0, 1],
            data_dir=data,
            failing_clip=False,
        )
    except DemoUnavailable as exc:
        print(f"SKIPPED: {exc}")
        return 2
    os.environ.update(
        {
            "GPUCONFIG_COMPOSE_FILE": str(setup.compose_file),
            "GPUCONFIG_COMPOSE_PROJECT": setup.project,
            "CONTAINERS_CONF": str(setup.containers_conf),
        }
    )
    worker = None
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.contrib.auth.models import User
        from django.core.management import call_command
        from django.test import Client

        from config.celery import app as celery_app
        from devices.services import gpu_inventory_rescan
        from orchestration.models import ApplyRun
        from orchestration.worker_process import start_worker

        call_command("migrate", verbosity=0)
        import redis

        redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).flushdb()
        celery_app.conf.broker_url = os.environ["CELERY_BROKER_URL"]
        user = User.objects.create_user("bench", is_staff=True)
        client = Client()
        client.force_login(user)
        gpu_inventory_rescan()
        worker = start_worker(dict(os.environ), data / "worker.log")

        placement = {s: 0 for s in ORDER}
        placement["ai-enrichment"] = 1

        def save() -> None:
            body = {
                "strategy": "manual",
                "assignments": [
                    # A fixed budget for the zoo: an auto-adjusted one would change (and its
                    # container be recreated) whenever the A400's load changes, so moving n
                    # services would recreate more than n.
                    {"service": s, "gpu_index": g}
                    | ({"vram_budget_override": 3.0} if s == "ai-enrichment" else {})
                    for s, g in placement.items()
                ],
            }
            r = client.put(
                "/api/system/gpu-config", json.dumps(body), content_type="application/json"
            )
            assert r.status_code == 200, r.content

        def apply() -> tuple[float, dict]:
            start = time.perf_counter()
            r = client.post("/api/system/gpu-config/apply", content_type="application/json")
            assert r.status_code == 202, r.content
            run_id = r.json()["run_id"]
            # Poll the run's row, not the status endpoint: that one also inspects every
            # container, and 50 podman calls a second would slow down what is measured.
            while ApplyRun.objects.filter(pk=run_id, status__in=FINAL).count() == 0:
                time.sleep(0.02)
            took = time.perf_counter() - start
            body = client.get("/api/system/gpu-config/status", {"run": run_id}).json()
            return took, body["run"]

        compose = shutil.which("podman-compose", path=str(Path(sys.executable).parent))
        assert compose is not None, "podman-compose is missing from the virtualenv"
        override = Path(settings.GPUCONFIG_OUTPUT_DIR) / "docker-compose.gpu-override.yml"

        def bare(services: list[str]) -> float:
            start = time.perf_counter()
            subprocess.run(
                [compose, "-p", setup.project, "-f", str(setup.compose_file), "-f",
                 str(override), "up", "-d", "--force-recreate", "--no-deps", *services],
                cwd=setup.compose_file.parent, capture_output=True, check=True, timeout=300,
            )  # fmt: skip
            return time.perf_counter() - start

        def by_hand(commands: list[dict]) -> float:
            """A make-before-break move done by hand: the run's own two commands (start the
            copy, then compose's recreate) and the copy's removal, and between them, where
            an operator must wait for the copy (then compose's new container) to be healthy
            before going on, a `podman healthcheck run` that passes, as the run waits. The
            run's network moves (the name switched from one container to the other) are left
            out: they are GPU Config's cost of not dropping a request."""
            start = time.perf_counter()
            for command in commands:
                argv = list(command["argv"])
                if "network" in argv:
                    continue
                subprocess.run(
                    argv, cwd=setup.compose_file.parent, capture_output=True, timeout=300,
                    check=command["exit_code"] == 0,
                )  # fmt: skip
                started = _started_container(argv, setup.project)
                if started:
                    _wait_healthy(started)
            return time.perf_counter() - start

        save()
        _, first = apply()
        assert first["status"] == "succeeded", first
        # By (moved, handed over): a round that moves services onto the A400 restarts them
        # (no room there for a second copy), one that moves them back hands over.
        Key = tuple[int, int]
        results: dict[Key, tuple[list[float], list[float]]] = {}
        recreated_count: dict[Key, int] = {}
        compose_times: dict[Key, list[float]] = {}
        for _ in range(ROUNDS):
            for n in (1, 3, 5):
                moved = ORDER[:n]
                for s in moved:
                    placement[s] = 1 - placement[s]
                save()
                took, run = apply()
                assert run["status"] == "succeeded", run
                # A move can also change another service's auto-adjusted budget (the zoo
                # shares the A400): the bare command recreates exactly what the apply did.
                recreated = [st["service"] for st in run["steps"]]
                assert set(moved) <= set(recreated), run
                handed = [st["service"] for st in run["steps"] if "without a gap" in st["message"]]
                key = (n, len(handed))
                recreated_count[key] = len(recreated)
                results.setdefault(key, ([], []))[0].append(took)
                # The commands' own time, from their rows.
                compose_times.setdefault(key, []).append(
                    sum(c["duration_s"] for c in run["commands"])
                )
                # The reference: the bare compose command for a plain recreate; the same
                # commands by hand when some services moved without a gap.
                reference = by_hand(run["commands"]) if handed else bare(recreated)
                results[key][1].append(reference)
        noop_times = []
        for _ in range(ROUNDS):
            took, run = apply()
            assert run["status"] == "succeeded" and run["steps"] == [], run
            noop_times.append(took)
    finally:
        if worker is not None:
            worker.stop()
        demo_down(data_dir=data)
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(data, ignore_errors=True)
        else:
            print(f"kept {data}")

    print(f"Apply & Restart vs bare podman-compose (real containers, median of {ROUNDS} rounds)")
    print("reference: `podman-compose -f base -f override up -d --force-recreate --no-deps S...`")
    print("make-before-break moves: the run's own commands by hand, waiting for health as it does")
    print(
        f"{'moved':>5}  {'recreated':>9}  {'handed over':>11}  {'apply (POST->final)':>20}"
        f"  {'by hand':>12}  {'ratio':>6}  {'of which commands':>17}"
    )
    ok = True
    for (n, handed_count), (applies, bares) in sorted(results.items()):
        a, b = statistics.median(applies), statistics.median(bares)
        ratio = a / b
        ok &= ratio <= 1.2
        verdict = "PASS" if ratio <= 1.2 else "FAIL"
        inner = statistics.median(compose_times[n, handed_count])
        print(
            f"{n:>5}  {recreated_count[n, handed_count]:>9}  {handed_count:>11}  {a:>18.2f} s"
            f"  {b:>10.2f} s  {ratio:>5.2f}x  {inner:>15.2f} s  {verdict}"
        )
    noop = statistics.median(noop_times)
    ok &= noop < 1.0
    print(
        f"no-op apply: median {noop * 1000:.0f} ms, worst {max(noop_times) * 1000:.0f} ms, "
        f"0 containers recreated  {'PASS' if noop < 1.0 else 'FAIL'} (target < 1 s)"
    )
    return 0 if ok else 1


def _started_container(argv: list[str], project: str) -> str | None:
    """The container a command started, when the run then waits for its health: the copy
    (`... run ... --name X`) or compose's new container (`... up ... service`)."""
    if "run" in argv and "--name" in argv:
        return argv[argv.index("--name") + 1]
    if "up" in argv:
        return f"{project}_{argv[-1]}_1"
    return None


def _wait_healthy(container: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        checked = subprocess.run(
            ["podman", "healthcheck", "run", container], capture_output=True, timeout=60
        )
        if checked.returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"{container} did not become healthy by hand")


if __name__ == "__main__":
    sys.exit(main())
