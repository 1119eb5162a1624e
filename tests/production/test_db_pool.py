"""Database connections under load: 100 concurrent clients against gunicorn on PostgreSQL.

PostgreSQL allows 100 connections by default. Each gunicorn process keeps one psycopg pool,
so the app holds at most workers x GPUCONFIG_DB_POOL_MAX connections however many clients
call; pg_stat_activity (filtered on the app's application_name) is sampled while they do.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests.production.support import (
    Browser,
    database_url,
    needs_postgresql,
    production_env,
    running_gunicorn,
)

pytestmark = [needs_postgresql, pytest.mark.django_db(transaction=True)]

CLIENTS = 100
REQUESTS_PER_CLIENT = 5


def _count_app_connections(application_name: str) -> int:
    with psycopg.connect(database_url(connection.settings_dict), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        ).fetchone()
    assert row is not None
    return int(row[0])


def _peak_connections_under_load(
    web: Browser, application_name: str, path: str = "/health"
) -> tuple[int, list[int]]:
    """Run CLIENTS concurrent clients; return the peak connection count and every status."""
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _count_app_connections(application_name))
            time.sleep(0.02)

    start = threading.Barrier(CLIENTS)

    def client(_: int) -> list[int]:
        own = Browser(web.host, web.port)
        start.wait()  # all clients at once, not one after another
        return [own.get(path).status for _ in range(REQUESTS_PER_CLIENT)]

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            statuses = [s for result in pool.map(client, range(CLIENTS)) for s in result]
    finally:
        done.set()
        sampler.join()
    return peak, statuses


def _env(tmp_path: Path, application_name: str, **overrides: str) -> dict[str, str]:
    return production_env(
        tmp_path / "data", GPUCONFIG_DB_APPLICATION_NAME=application_name, **overrides
    )


def test_default_pool_keeps_100_clients_far_below_postgresqls_limit(tmp_path: Path) -> None:
    # The image's defaults: 2 gunicorn workers x 8 threads, a pool of 8 per worker.
    name = "gpuconfig-test-default"
    with running_gunicorn(_env(tmp_path, name), tmp_path, workers=2, threads=8) as web:
        peak, statuses = _peak_connections_under_load(web, name)

    print(f"{name}: peak {peak} PostgreSQL connections for {CLIENTS} clients")
    assert statuses == [200] * CLIENTS * REQUESTS_PER_CLIENT
    assert 1 <= peak <= 2 * 8


def test_pool_bounds_connections_below_the_number_of_threads(tmp_path: Path) -> None:
    name = "gpuconfig-test-pool-4"
    env = _env(tmp_path, name, GPUCONFIG_DB_POOL_MAX="4")
    with running_gunicorn(env, tmp_path, workers=1, threads=32) as web:
        peak, statuses = _peak_connections_under_load(web, name)

    print(f"{name}: peak {peak} PostgreSQL connections for {CLIENTS} clients")
    assert statuses == [200] * CLIENTS * REQUESTS_PER_CLIENT
    assert 1 <= peak <= 4


def test_without_the_pool_every_busy_thread_holds_its_own_connection(tmp_path: Path) -> None:
    # The contrast that shows the sampling sees connections the pool would have saved.
    name = "gpuconfig-test-no-pool"
    env = _env(tmp_path, name, GPUCONFIG_DB_POOL_MAX="0")
    with running_gunicorn(env, tmp_path, workers=1, threads=32) as web:
        peak, statuses = _peak_connections_under_load(web, name)

    print(f"{name}: peak {peak} PostgreSQL connections for {CLIENTS} clients")
    assert statuses == [200] * CLIENTS * REQUESTS_PER_CLIENT
    assert peak > 4
