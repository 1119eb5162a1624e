"""SQLite connections that never create their database file.

SQLite creates a missing database file on first connect, with the umask's mode: 0644 on a
default system, sessions and API tokens readable by every local user. The embedded default's
file is created 0600 by ``manage.py prepare_data_dir`` instead (common/data_dir.py); a
process that would open a missing one stops with a sentence saying so. Imported by the
settings, so nothing Django here.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

PREPARE = "Run `manage.py prepare_data_dir` (bin/run and the image's entrypoint run it first)."
CREATES_IT_PRIVATE = "It creates the file private (0600) before SQLite first opens it."


def missing_database(name: str) -> str:
    return f"The SQLite database {name} does not exist."


class ExistingDatabaseConnection(sqlite3.Connection):
    """sqlite3.connect's ``factory`` for a database file that must already exist.

    In-memory databases and ``file:`` URIs (the tests' databases) are left to SQLite.
    """

    def __init__(self, database: str | bytes | os.PathLike[Any], *args: Any, **kwargs: Any):
        name = os.fsdecode(database)
        if name != ":memory:" and not name.startswith("file:") and not Path(name).is_file():
            raise sqlite3.OperationalError(
                f"{missing_database(name)} {PREPARE} {CREATES_IT_PRIVATE}"
            )
        super().__init__(database, *args, **kwargs)
