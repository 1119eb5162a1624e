"""/health (issue 12): HEAD like GET, and anonymous callers learn only "unavailable"."""

from __future__ import annotations

import contextlib
import logging

import pytest
from django.db import connection
from django.test import Client

pytestmark = pytest.mark.django_db


def test_health_answers_head_like_get():
    client = Client()
    get, head = client.get("/health"), client.head("/health")
    assert (get.status_code, head.status_code) == (200, 200)
    body = get.json()
    assert (body["status"], body["database"]) == ("ok", "ok")
    # Each dependency is reported apart; the HTTP status follows the database alone.
    assert set(body) == {"status", "database", "broker", "worker", "podman"}
    assert head.content == b""


def test_health_tells_anonymous_callers_only_unavailable_and_logs_the_detail(caplog):
    # A real database error: a failed statement leaves PostgreSQL's transaction aborted (on
    # SQLite, the same statement is refused outright), so the health check's query fails.
    with connection.cursor() as cursor, contextlib.suppress(Exception):
        cursor.execute("SELECT * FROM no_such_table_for_health")

    with caplog.at_level(logging.ERROR, logger="pages.views"):
        response = Client().get("/health")

    if response.status_code == 200:
        pytest.skip("this database keeps working after a failed statement (SQLite)")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "unavailable"}
    assert "health check: the database is unavailable:" in caplog.text
