"""What the embedded defaults keep in the data folder (GPUCONFIG_DATA_DIR, ``.data/``): the
secret key, the SQLite database and the filesystem broker's folders.

Loading the settings only reads them. ``manage.py prepare_data_dir`` creates what the
configuration in force needs (``bin/run`` and the image's entrypoint run it before anything
else), and the system check here names whatever is still missing, so that a command started
without it stops with a sentence instead of an empty secret key or SQLite's "unable to open
database file". Private from their first byte: 0600 files in a 0700 folder (common/files.py).
Production (PostgreSQL, Redis, DJANGO_SECRET_KEY) needs none of them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.checks import CheckMessage, Error

from common.files import private_dir, private_file_create
from common.sqlite import CREATES_IT_PRIVATE, PREPARE, missing_database

_BROKER_FOLDER_OPTIONS = ("data_folder_in", "data_folder_out", "processed_folder", "control_folder")


@dataclass(frozen=True)
class DataDirNeeds:
    """The files and folders the embedded defaults in force read; None or () when unused."""

    data_dir: Path
    secret_key_file: Path | None = None
    database_files: tuple[Path, ...] = ()
    broker_folders: tuple[Path, ...] = ()

    @property
    def anything(self) -> bool:
        return bool(self.secret_key_file or self.database_files or self.broker_folders)


def needs_of(settings: Any) -> DataDirNeeds:
    """What these settings' embedded defaults need (django.conf.settings, usually)."""
    database_files = tuple(
        Path(db["NAME"])
        for db in settings.DATABASES.values()
        if db["ENGINE"] == "django.db.backends.sqlite3" and str(db["NAME"]) not in ("", ":memory:")
    )
    broker_folders: tuple[Path, ...] = ()
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        # In and out are one folder: each folder once, in order.
        broker_folders = tuple(dict.fromkeys(Path(options[key]) for key in _BROKER_FOLDER_OPTIONS))
    return DataDirNeeds(
        data_dir=Path(settings.DATA_DIR),
        secret_key_file=settings.GPUCONFIG_SECRET_KEY_FILE,
        database_files=database_files,
        broker_folders=broker_folders,
    )


def prepare(needs: DataDirNeeds) -> list[str]:
    """Create what ``needs`` lists and is missing; a sentence for each thing created.

    Safe to run at every start, by several processes at once: nothing that exists is
    rewritten (the data folder is only tightened to 0700, which takes access away).
    """
    if not needs.anything:
        return []
    created = []
    if not needs.data_dir.is_dir():
        created.append(f"Created the data folder {needs.data_dir} (0700).")
    private_dir(needs.data_dir)
    if needs.secret_key_file is not None and private_file_create(
        needs.secret_key_file, secrets.token_urlsafe(50)
    ):
        created.append(f"Created a random secret key in {needs.secret_key_file} (0600).")
    for database in needs.database_files:
        # An empty file is an empty database: SQLite then keeps this mode (and gives its
        # journals the same), where a file it created itself would follow the umask.
        if private_file_create(database):
            created.append(f"Created the SQLite database {database} (0600, empty until migrate).")
    for folder in needs.broker_folders:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            created.append(f"Created the Celery broker's folder {folder}.")
    return created


def missing(needs: DataDirNeeds) -> list[CheckMessage]:
    """An error for each thing ``needs`` lists that is not there yet."""
    errors: list[CheckMessage] = []
    key = needs.secret_key_file
    if key is not None and not key.is_file():
        errors.append(
            Error(
                f"No secret key: DJANGO_SECRET_KEY is not set and {key} does not exist.",
                hint=PREPARE,
                id="common.E001",
            )
        )
    errors.extend(
        Error(
            missing_database(str(database)),
            hint=f"{PREPARE} {CREATES_IT_PRIVATE}",
            id="common.E002",
        )
        for database in needs.database_files
        if not database.is_file()
    )
    absent = [folder for folder in needs.broker_folders if not folder.is_dir()]
    if absent:
        errors.append(
            Error(
                "The filesystem Celery broker's folder "
                f"{', '.join(str(folder) for folder in absent)} does not exist.",
                hint=PREPARE,
                id="common.E003",
            )
        )
    return errors


def data_dir_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The system check: what the embedded defaults in force need and nobody created."""
    from django.conf import settings

    return missing(needs_of(settings))
