"""Benchmark several GPU hosts (issue 20) at 1, 10 and 50 hosts of 8 GPUs, 400 services in all:
what the pages cost, how fast a dead agent reads offline, and an apply's fan-out overhead.

Run: .venv/bin/python -m bench.bench_hosts   (exits non-zero when a target fails; ~2.5 min)

Needs PostgreSQL and Redis as in development. The database is its own and is dropped and
created by each run (BENCH_HOSTS_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/gc_bench_hosts); so is the Redis database
(BENCH_HOSTS_REDIS_URL, default redis://127.0.0.1:6379/9, emptied first). Planning time at
many hosts is bench/bench_hosts_planning.py's, not this one's.

"N hosts" counts the local host (number 0, its 8 GPUs simulated) and N-1 hosts with an agent,
built through the real services: host_add, host_join, then report_parse + host_report_record
of a stand-in report (8 GPUs, the labelled services that host defines). The 400 services are
each defined on 1-3 random hosts (seeded); the local ones in a compose file. A configuration
is saved with PUT /api/system/gpu-config (strategy balanced).

(1) SQL queries of the settings page (GET /settings/gpu/, staff), GET /api/system/gpus and
    GET /api/hosts, after a warm-up request (GPUCONFIG_SAMPLE_SECONDS=3600, so both read the
    same shared GPU sample and container read). Target: the same count at every size; where
    it differs, the SQL shapes (literals as ?) are printed with their count per size and the
    product code that ran them.
(2) Agent death to offline: N-1 real Celery worker processes as the agents
    (`celery -A config worker -Q host.<name> -n agent@<name> --pool solo`, no mingle or
    gossip, as `manage.py run_agent` starts them), joined as hosts; one is killed (SIGKILL) at
    a random moment of the check's cycle while the central check
    (orchestration.host_checks.hosts_check) runs at the beat's cadence
    (GPUCONFIG_HOST_OFFLINE_SECONDS // 2, with GPUCONFIG_HOST_OFFLINE_SECONDS=6 here).
    Printed: seconds until the API would say offline (host_state, polled every 0.1 s) and
    until the check wrote it. Target: within 1.5 x GPUCONFIG_HOST_OFFLINE_SECONDS.
(3) Fan-out overhead of an apply touching every other host: in-process stand-in agents (one
    Celery app and worker per host, on queue host.<name>) whose agent.apply_slice sleeps a
    fixed recreate time (0.3 s to 0.6 s, spread over the hosts) and answers ok. Timed:
    what an apply does (orchestration.fanout.send_slices: every touched host at once, then
    every answer), and for reference one host after another, against the slowest host's own
    sleep. Target: <= 1.2 x for what an apply does.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
SEED = 20261203
HOST_COUNTS = (1, 10, 50)
GPUS_PER_HOST = 8
SERVICES = 400
CARD_MB = 81_920
MIN_SERVICE_MB, MAX_SERVICE_MB = 300, 2_000
OFFLINE_SECONDS = 6
KILLS_PER_SIZE = 2
RECREATE_MIN_S, RECREATE_MAX_S = 0.3, 0.6
FANOUT_TARGET = 1.2
NO_DATABASE = "postgres://the-agent-has-no-database@127.0.0.1:1/none"  # agents have none

DATABASE_URL = os.environ.get(
    "BENCH_HOSTS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gc_bench_hosts"
)
REDIS_URL = os.environ.get("BENCH_HOSTS_REDIS_URL", "redis://127.0.0.1:6379/9")

_TMP = Path(tempfile.mkdtemp(prefix="gpuconfig-bench-hosts-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


def _gpu(index: int, host: str) -> dict[str, Any]:
    return {
        "index": index,
        "uuid": f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{host}.{index}')}",
        "name": "NVIDIA H100 80GB HBM3",
        "vram_total_mb": CARD_MB,
        "vram_used_mb": 1_000 + index,
        "compute_capability": "9.0",
    }


def _fresh_database() -> None:
    """Drop and create the bench's own database (connected to the server's `postgres`)."""
    base, name = DATABASE_URL.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


_SIMULATED = _TMP / "local-gpus.json"
_SIMULATED.write_text(json.dumps({"gpus": [_gpu(i, "local") for i in range(GPUS_PER_HOST)]}))
_AGENT_ENV = {
    "DJANGO_SECRET_KEY": "bench-only-" + "x" * 50,  # nothing here outlives the run
    "CELERY_BROKER_URL": REDIS_URL,
    "GPUCONFIG_DATA_DIR": str(_TMP / "data"),
    "GPUCONFIG_HOST_OFFLINE_SECONDS": str(OFFLINE_SECONDS),
    "GPUCONFIG_LOG_LEVEL": "WARNING",
}
# `python -m bench.bench_hosts --standin NAME SECONDS`: one stand-in agent of part (3), a
# process of its own like a real agent's, with no database.
STANDIN = sys.argv[1:2] == ["--standin"]
os.environ.update(_AGENT_ENV)
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
os.environ["DATABASE_URL"] = NO_DATABASE if STANDIN else DATABASE_URL
os.environ["GPUCONFIG_SIMULATED_GPUS"] = str(_SIMULATED)
# The GPU sample and the container read are shared for this long (default 1 s): longer than
# any request here, so the measured request reads what its warm-up took at every size,
# instead of re-reading only where the page is slow (a count that would measure time).
os.environ["GPUCONFIG_SAMPLE_SECONDS"] = "3600"
if not STANDIN:
    _fresh_database()

import django  # noqa: E402  (settings come from the environment set just above)

django.setup()

from django.conf import settings  # noqa: E402

from common.data_dir import needs_of  # noqa: E402
from common.data_dir import prepare as prepare_data_dir  # noqa: E402

if not STANDIN:
    prepare_data_dir(needs_of(settings))

import redis  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402

from config.celery import app as celery_app  # noqa: E402
from devices.hosts import (  # noqa: E402
    host_add,
    host_join,
    host_report_record,
    host_state,
    offline_after,
    report_parse,
)
from devices.models import Host, HostStatus  # noqa: E402
from devices.services import gpu_inventory_rescan, reset_sampler  # noqa: E402
from gpuconfig.models import ConfigVersion  # noqa: E402
from gpuconfig.selectors import version_configuration  # noqa: E402
from orchestration import fanout  # noqa: E402
from orchestration.host_checks import hosts_check  # noqa: E402

PAGES = {
    "settings page": "/settings/gpu/",
    "GET /api/system/gpus": "/api/system/gpus",
    "GET /api/hosts": "/api/hosts",
}


def host_name(number: int) -> str:
    return f"gpu-host-{number:02d}"


# --- building N hosts ------------------------------------------------------------------


def services_by_host(hosts: int, rng: random.Random) -> dict[int, dict[str, int]]:
    """Host number -> {service: VRAM estimate}: each service defined on 1-3 random hosts."""
    out: dict[int, dict[str, int]] = {n: {} for n in range(hosts)}
    for k in range(SERVICES):
        vram = round(rng.uniform(MIN_SERVICE_MB, MAX_SERVICE_MB))
        for number in rng.sample(range(hosts), min(hosts, rng.randint(1, 3))):
            out[number][f"svc-{k:03d}"] = vram
    return out


def labels(name: str, vram: int) -> dict[str, str]:
    return {"gpuconfig.model": f"{name}-model", "gpuconfig.vram_estimate_mb": str(vram)}


def compose_text(services: dict[str, int]) -> str:
    lines = ["services:"]
    for name, vram in services.items():
        lines += [f"  {name}:", "    image: localhost/standin:latest", "    labels:"]
        lines += [f'      {key}: "{value}"' for key, value in labels(name, vram).items()]
    return "\n".join(lines) + "\n"


def reset_database() -> Client:
    """Empty every table (and the cache, whose keys name version numbers), rescan the
    local GPUs and log a staff user in."""
    call_command("flush", interactive=False, verbosity=0)
    cache.clear()
    reset_sampler()
    gpu_inventory_rescan()
    client = Client()
    client.force_login(User.objects.create_user("bench", is_staff=True))
    return client


def join_hosts(count: int) -> list[Host]:
    """Hosts 1..count added and joined (online, heard from now)."""
    joined = []
    for number in range(1, count + 1):
        _, token = host_add(host_name(number))
        host, _ = host_join(token, agent_version="bench")
        joined.append(host)
    return joined


def build(hosts: int, rng: random.Random) -> Client:
    """The local host plus hosts-1 reporting agents, their services, and a saved version."""
    client = reset_database()
    defined = services_by_host(hosts, rng)
    compose = _TMP / f"compose-{hosts}" / "docker-compose.prod.yml"
    compose.parent.mkdir(exist_ok=True)
    compose.write_text(compose_text(defined[0]))
    settings.GPUCONFIG_COMPOSE_FILE = compose
    settings.GPUCONFIG_OUTPUT_DIR = compose.parent / "config"
    for host in join_hosts(hosts - 1):
        report = {
            "gpus": [_gpu(i, host.name) for i in range(GPUS_PER_HOST)],
            "services": {n: labels(n, v) for n, v in defined[host.number].items()},
            "agent_version": "bench",
        }
        gpus, services, version = report_parse(report)
        host_report_record(host, gpus, services, agent_version=version)
    answer = client.put(
        "/api/system/gpu-config", {"strategy": "balanced"}, content_type="application/json"
    )
    if answer.status_code != 200:
        raise SystemExit(f"saving at {hosts} hosts answered {answer.status_code}: {answer.json()}")
    return client


# --- (1) queries -------------------------------------------------------------------------

_LITERAL = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")
_IN_LIST = re.compile(r"IN \([^()]*\)")


_COLUMNS = re.compile(r"^SELECT .+? FROM ", re.DOTALL)


def shape(sql: str) -> str:
    """The query with its literals as ?, an IN list as (...) and its columns as *, to find
    repeats."""
    return _COLUMNS.sub("SELECT * FROM ", _IN_LIST.sub("IN (...)", _LITERAL.sub("?", sql)))


def call_site() -> str:
    """The innermost two frames of the product's own code that ran a query."""
    frames = [
        f"{Path(frame.filename).relative_to(ROOT)}:{frame.lineno} {frame.name}"
        for frame in traceback.extract_stack()
        if frame.filename.startswith(str(ROOT))
        and not frame.filename.startswith(str(ROOT / ".venv"))
        and not frame.filename.startswith(str(ROOT / "bench"))
    ]
    return " <- ".join(reversed(frames[-2:])) or "?"


Queries = Counter[tuple[str, str]]  # (shape, call site) -> how many


def _record_site(
    sites: list[str], execute: Any, sql: str, params: Any, many: bool, context: Any
) -> Any:
    sites.append(call_site())
    return execute(sql, params, many, context)


def of_shape(found: Queries, sql: str) -> int:
    return sum(count for (query, _), count in found.items() if query == sql)


def measure_queries(client: Client) -> dict[str, tuple[int, Queries, float]]:
    out = {}
    for label, url in PAGES.items():
        client.get(url)  # warm: registry parse, GPU sample
        sites: list[str] = []
        where = functools.partial(_record_site, sites)
        with CaptureQueriesContext(connection) as queries, connection.execute_wrapper(where):
            started = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"{label} answered {response.status_code}")
        found = Counter(
            (shape(q["sql"]), site) for q, site in zip(queries.captured_queries, sites, strict=True)
        )
        out[label] = (len(queries), found, elapsed * 1000)
    return out


# --- (3) fan-out -------------------------------------------------------------------------


def recreate_s(number: int, agents: int) -> float:
    """Host number's stand-in recreate time: 0.3 s for the first, 0.6 s for the last."""
    if agents <= 1:
        return RECREATE_MAX_S
    return RECREATE_MIN_S + (RECREATE_MAX_S - RECREATE_MIN_S) * (number - 1) / (agents - 1)


def standin_agent(name: str, seconds: float) -> None:
    """Run as one stand-in agent: the real Celery worker of an agent (host.<name>, node
    agent@<name>), whose agent.apply_slice sleeps ``seconds`` (the recreate) and answers ok."""

    def recreate_here(payload: Any) -> dict[str, Any]:
        time.sleep(seconds)
        return {"ok": True, "problems": {}, "commands": []}

    fanout.apply_slice_here = recreate_here  # what agent.apply_slice calls
    celery_app.worker_main(
        [
            *("worker", "-Q", f"host.{name}", "-n", f"agent@{name}", "--pool", "solo"),
            *("--without-mingle", "--without-gossip", "--loglevel", "INFO"),
        ]
    )


def touched_parts(hosts: int) -> list[tuple[Host, dict[str, Any]]]:
    """Each touched host and its payload for the saved version applied from nothing (every
    placed service recreated where it runs), as host_steps builds them."""
    version = ConfigVersion.objects.order_by("-number").first()
    assert version is not None
    target = version_configuration(version)
    split = fanout.split_services([a.service for a in target.assignments], target, None)
    parts = []
    for number in split.touched_numbers():
        host = Host.objects.get(number=number)
        payload = fanout.slice_payload(
            run_id=str(uuid.uuid4()),
            phase="arrive",
            version=version.number,
            config=fanout.host_part(target, number),
            recreate=split.remote[number].recreate,
            stop=[],
        )
        parts.append((host, payload))
    return parts


def send_sequential(parts: list[tuple[Host, dict[str, Any]]]) -> None:
    """The reference: one host after another (how host_steps sent them before)."""
    for host, payload in parts:
        fanout.send_slice(host, payload)


def send_parallel(parts: list[tuple[Host, dict[str, Any]]]) -> None:
    """What an apply does: orchestration.fanout.send_slices (all at once, then every answer)."""
    for host, answer in fanout.send_slices(parts):
        if not (isinstance(answer, dict) and answer.get("ok")):
            raise SystemExit(f"host {host.name} answered {answer!r}")


def timed(call: Callable[[], None]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure_fanout(hosts: int) -> tuple[int, float, float, float] | None:
    """(touched hosts, slowest sleep, sequential s, parallel s), or None with no agent."""
    parts = touched_parts(hosts)
    if not parts:
        return None
    sleeps = {host.name: recreate_s(host.number, hosts - 1) for host, _ in parts}
    with running([Agent(name, standin_s=seconds) for name, seconds in sleeps.items()]):
        send_parallel(parts[:1])  # warm: connections to the broker and the result backend
        sequential = timed(lambda: send_sequential(parts))
        parallel = timed(lambda: send_parallel(parts))
    return len(parts), max(sleeps.values()), sequential, parallel


# --- (2) agent death to offline ----------------------------------------------------------


class Agent:
    """A real Celery worker process on a host's queue, under the agent's node name."""

    def __init__(self, name: str, *, standin_s: float | None = None) -> None:
        self.name = name
        self.log = _TMP / f"agent-{name}.log"
        if standin_s is None:  # the real agent's worker, as `manage.py run_agent` starts it
            argv = [
                *(str(Path(sys.executable).parent / "celery"), "-A", "config", "worker"),
                *("-Q", f"host.{name}", "-n", f"agent@{name}", "--pool", "solo"),
                *("--without-mingle", "--without-gossip", "--loglevel", "INFO"),
            ]
        else:  # part (3)'s stand-in: the same worker, agent.apply_slice only sleeps
            argv = [sys.executable, "-m", "bench.bench_hosts", "--standin", name, str(standin_s)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **_AGENT_ENV, "DATABASE_URL": NO_DATABASE},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the kill reaches all of it
            )

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise SystemExit(f"agent {self.name} exited:\n{self.log.read_text()[-2000:]}")
        return f"agent@{self.name} ready." in self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the host's power cut, as GPU Config sees it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@contextmanager
def running(agents: list[Agent]) -> Iterator[list[Agent]]:
    """The agents' processes, once each says it is ready; killed on the way out."""
    try:
        deadline = time.monotonic() + 120
        while not all(agent.ready() for agent in agents):
            if time.monotonic() > deadline:
                raise SystemExit("the agents did not become ready within 120 s")
            time.sleep(0.2)
        yield agents
    finally:
        for agent in agents:
            agent.kill()


def measure_offline(hosts: int, rng: random.Random) -> list[tuple[float, float]]:
    """Per kill: (seconds until the API reads offline, until the check wrote offline).

    The API (host_state) says offline once the last heartbeat is older than
    GPUCONFIG_HOST_OFFLINE_SECONDS, whether or not a check has written so: that moment is
    read off the row (offline_since is the last heartbeat), not polled."""
    reset_database()
    cadence = settings.GPUCONFIG_HOST_OFFLINE_SECONDS // 2
    out = []
    with running([Agent(host_name(n)) for n in range(1, hosts)]) as agents:
        join_hosts(hosts - 1)  # just now: every agent heard from
        check = hosts_check()
        if len(check.answered) != hosts - 1:
            raise SystemExit(f"{len(check.answered)} of {hosts - 1} agents answered the ping")
        victims = rng.sample(agents, KILLS_PER_SIZE)
        tick = time.monotonic()
        for victim in victims:
            kill_at = tick + cadence + rng.uniform(0, cadence)  # a random moment of a cycle
            killed: float | None = None
            killed_at = timezone.now()
            written: float | None = None
            while written is None:
                tick += cadence
                while (now := time.monotonic()) < tick:
                    if killed is None and now >= kill_at:
                        victim.kill()
                        killed, killed_at = time.monotonic(), timezone.now()
                    time.sleep(0.02)
                check = hosts_check()  # as beat runs orchestration.check_hosts
                if killed is not None and victim.name in check.offline:
                    written = time.monotonic() - killed
                tick = max(tick, time.monotonic() - cadence)  # a late check delays the next
            row = Host.objects.get(name=victim.name)
            if row.status != HostStatus.OFFLINE or row.offline_since is None:
                raise SystemExit(f"{victim.name} not written offline")
            reads = row.offline_since + offline_after() - killed_at
            if host_state(row).label != "offline":
                raise SystemExit(f"{victim.name} written offline, but does not read so")
            out.append((max(0.0, reads.total_seconds()), written))
    return out


# --- the run -----------------------------------------------------------------------------


def main() -> int:
    setup_test_environment()
    # A host's answer is awaited compose + health timeouts + 30 s: a lost one fails the bench
    # within a minute here, not after the production bound.
    settings.GPUCONFIG_COMPOSE_TIMEOUT_SECONDS = 10
    settings.GPUCONFIG_HEALTH_TIMEOUT_SECONDS = 10
    call_command("migrate", verbosity=0)
    redis.Redis.from_url(REDIS_URL).flushdb()
    rng = random.Random(SEED)
    offline_s = settings.GPUCONFIG_HOST_OFFLINE_SECONDS
    print(
        f"{SERVICES} services on 1-3 hosts each, {GPUS_PER_HOST} GPUs per host (the local "
        f"host and N-1 agents), PostgreSQL {DATABASE_URL.rsplit('/', 1)[1]}, Redis {REDIS_URL}"
    )
    queries: dict[int, dict[str, tuple[int, Queries, float]]] = {}
    fanouts: dict[int, tuple[int, float, float, float] | None] = {}
    for hosts in HOST_COUNTS:
        started = time.perf_counter()
        client = build(hosts, rng)
        built = time.perf_counter() - started
        queries[hosts] = measure_queries(client)
        fanouts[hosts] = measure_fanout(hosts)
        print(f"  built {hosts} host(s) in {built:.1f} s")
    failures: list[str] = []

    print("\n(1) SQL queries per request (staff user, after one warm-up request)")
    print(f"{'request':<24}" + "".join(f"{f'{n} host(s)':>24}" for n in HOST_COUNTS))
    for label in PAGES:
        cells = "".join(
            f"{f'{queries[n][label][0]} queries {queries[n][label][2]:7.1f} ms':>24}"
            for n in HOST_COUNTS
        )
        print(f"{label:<24}{cells}")
        counts = [queries[n][label][0] for n in HOST_COUNTS]
        if len(set(counts)) != 1:
            failures.append(f"{label}: {counts} queries")
            print("    queries whose count changes with the hosts (per size, shape, called from):")
            found = set().union(*(queries[n][label][1] for n in HOST_COUNTS))
            for sql in sorted({sql for sql, _ in found}):
                per = [of_shape(queries[n][label][1], sql) for n in HOST_COUNTS]
                if len(set(per)) == 1:
                    continue
                print(f"      {' / '.join(map(str, per))} x  {sql[:300]}")
                for site in sorted({site for q, site in found if q == sql}):
                    per = [queries[n][label][1][(sql, site)] for n in HOST_COUNTS]
                    print(f"        {' / '.join(map(str, per))}  from {site}")

    cadence = offline_s // 2
    print(
        f"\n(2) Agent killed (SIGKILL) -> offline; GPUCONFIG_HOST_OFFLINE_SECONDS={offline_s}, "
        f"check every {cadence} s (beat's cadence), ping timeout 2 s"
    )
    print(
        f"{'hosts':>5} {'agents':>6} {'kill':>4} {'API reads offline s':>20} {'check wrote s':>14}"
    )
    print(f"{1:>5} {0:>6}    -   (the local host has no agent)")
    bound = 1.5 * offline_s
    for hosts in HOST_COUNTS[1:]:
        for k, (read, written) in enumerate(measure_offline(hosts, rng), start=1):
            print(f"{hosts:>5} {hosts - 1:>6} {k:>4} {read:>20.1f} {written:>14.1f}")
            if written > bound:
                failures.append(f"offline written {written:.1f} s after the kill at {hosts} hosts")
    print(f"  target: written offline within 1.5 x {offline_s} = {bound:.0f} s of the kill")

    print(
        f"\n(3) Apply fan-out to every touched host (stand-in recreate {RECREATE_MIN_S}-"
        f"{RECREATE_MAX_S} s per host)"
    )
    print(
        f"{'hosts':>5} {'touched':>7} {'slowest s':>9} {'apply (all at once) s':>21} "
        f"{'ratio':>6} {'one by one s':>12} {'ratio':>6}"
    )
    for hosts in HOST_COUNTS:
        measured = fanouts[hosts]
        if measured is None:
            print(f"{hosts:>5} {0:>7}   (no other host: the local executor only)")
            continue
        touched, slowest, sequential, parallel = measured
        print(
            f"{hosts:>5} {touched:>7} {slowest:>9.2f} {parallel:>21.2f} "
            f"{parallel / slowest:>5.2f}x {sequential:>12.2f} {sequential / slowest:>5.2f}x"
        )
        if parallel / slowest > FANOUT_TARGET:
            failures.append(f"fan-out at {hosts} hosts: {parallel / slowest:.2f}x the slowest host")

    if failures:
        print("\nFAILED: " + "; ".join(failures))
        return 1
    print("\nOK: same query counts at every size; fan-out and offline within their targets")
    return 0


if __name__ == "__main__":
    if STANDIN:
        standin_agent(sys.argv[2], float(sys.argv[3]))
    else:
        sys.exit(main())
