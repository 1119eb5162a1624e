"""``manage.py wait_for_db [--timeout SECONDS] [--migrated]``: wait until the database is ready.

podman-compose ignores ``depends_on: condition: service_healthy`` on podman 4.3, so the
containers wait themselves: the web container until PostgreSQL accepts connections (then it
migrates), the worker with ``--migrated`` also until no migration is left unapplied, so that
only the web container ever runs ``migrate``.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.db.utils import OperationalError

# One progress line at most this often, so a long wait does not flood the container log.
PROGRESS_EVERY_SECONDS = 5.0
RETRY_SECONDS = 1.0


def describe(settings_dict: dict[str, Any]) -> str:
    """Where the database is, for messages: engine, host, port and name, never the password."""
    engine = str(settings_dict["ENGINE"]).rsplit(".", 1)[-1]
    if engine == "sqlite3":
        return f"sqlite3 {settings_dict['NAME']}"
    host = settings_dict.get("HOST") or "localhost"
    port = settings_dict.get("PORT") or "default port"
    return f"{engine} {host}:{port}/{settings_dict['NAME']}"


def probe_connection(alias: str) -> BaseDatabaseWrapper:
    """A separate, unpooled connection to the database, opened now (raises when it cannot be).

    The probe bypasses the connection pool: a pool answers a refused connection only with
    "couldn't get a connection after N s", which hides the reason an operator needs.
    """
    base = connections[alias]
    settings_dict = {**base.settings_dict}
    settings_dict["OPTIONS"] = {k: v for k, v in settings_dict["OPTIONS"].items() if k != "pool"}
    settings_dict["CONN_MAX_AGE"] = 0
    if settings_dict["ENGINE"] == "django.db.backends.postgresql":
        # A host that drops packets would otherwise hold one attempt past the whole timeout.
        settings_dict["OPTIONS"].setdefault("connect_timeout", 5)
    probe = type(base)(settings_dict, alias=f"{alias}-wait-for-db")
    probe.ensure_connection()
    return probe


def unapplied_migrations(connection: BaseDatabaseWrapper) -> list[str]:
    """``app.migration`` names that ``migrate`` would apply now, in order."""
    executor = MigrationExecutor(connection)
    targets = executor.loader.graph.leaf_nodes()
    return [f"{m.app_label}.{m.name}" for m, _backwards in executor.migration_plan(targets)]


class Command(BaseCommand):
    help = "Wait until the database accepts connections (and, with --migrated, is migrated)."
    # The database may be down: the system checks must not need it before we have waited.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--timeout",
            type=float,
            default=60.0,
            help="give up after this many seconds (default 60)",
        )
        parser.add_argument(
            "--migrated",
            action="store_true",
            help="also wait until no migration is unapplied (another process runs migrate)",
        )
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args: Any, timeout: float, migrated: bool, database: str, **_: Any) -> None:
        where = describe(connections[database].settings_dict)
        started = time.monotonic()
        last_progress = -PROGRESS_EVERY_SECONDS
        while True:
            elapsed = time.monotonic() - started
            waiting_for = not_ready_because(database, migrated=migrated)
            if not waiting_for:
                ready = "is ready and migrated" if migrated else "accepts connections"
                self.stdout.write(f"Database {where} {ready} (after {elapsed:.0f} s).")
                return
            if elapsed >= timeout:
                raise CommandError(
                    f"Database {where} was not ready after {timeout:g} s: {waiting_for}"
                )
            if elapsed - last_progress >= PROGRESS_EVERY_SECONDS:
                progress = f"{elapsed:.0f} s of {timeout:g} s"
                self.stdout.write(f"Waiting for database {where}: {waiting_for} ({progress})")
                last_progress = elapsed
            time.sleep(min(RETRY_SECONDS, max(0.0, timeout - elapsed)))


def not_ready_because(database: str, *, migrated: bool) -> str:
    """Why the database is not ready yet, in words; empty when it is."""
    try:
        probe_connection(database).close()
        # The migration loader queries through the alias, so it uses the real connection
        # (pooled or not), now that the database answers.
        pending = unapplied_migrations(connections[database]) if migrated else []
    except OperationalError as exc:
        connections[database].close()  # a broken connection must not be reused next time
        return f"not accepting connections: {_first_line(exc)}"
    if not pending:
        return ""
    named = ", ".join(pending[:3]) + (", ..." if len(pending) > 3 else "")
    return (
        f"{len(pending)} migration(s) not applied yet ({named}); "
        "waiting for `manage.py migrate` (the web container runs it)"
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
