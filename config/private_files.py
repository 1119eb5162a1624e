"""Files only this user may read (secret key, SQLite database, admin password), private from
their first byte: created with their mode, never chmod-ed after something was written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700; tighten it if it is already there.

    Tightening an existing folder is safe at any time: it only takes access away. Parents
    that this creates are 0700 too; existing parents are left as they are.
    """
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def private_file_create(path: Path, text: str = "") -> bool:
    """Create ``path`` as 0600 holding ``text``, unless it exists; whether this created it.

    The content goes to a temporary file (0600 from the start, see mkstemp) that is then
    linked into place: two processes starting at once (web server and worker) never see a
    half-written file, and the loser keeps the winner's content.
    """
    # A missing folder is made private; an existing one is the caller's (it may be /tmp).
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def private_file_replace(path: Path, text: str) -> None:
    """Write ``path`` as 0600 with ``text``, replacing any earlier file atomically."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
