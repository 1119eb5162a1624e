"""Files written whole or not at all: the files other programs read (the override, the
assignments copy), and the private ones (secret key, SQLite database, admin password).

Every write goes through one temporary file beside its target, on disk before it is renamed
or linked into place: readers see the old file or the new one, never half of one.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
SHARED_FILE_MODE = 0o644  # read by podman-compose and people, maybe as other users


def _written_temporary(path: Path, text: str) -> str:
    """A temporary file beside ``path`` holding ``text``, fsync-ed; its name.

    In the same folder so that the final rename or link stays within one filesystem, which
    POSIX makes atomic. mkstemp creates it 0600: private from its first byte.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return tmp_name


def _sync_folder(folder: Path) -> None:
    """Make a rename or link in ``folder`` survive a crash."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (0644) so that readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = _written_temporary(path, text)
    try:
        os.chmod(tmp_name, SHARED_FILE_MODE)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def read_or_none(path: Path) -> str | None:
    """The file's text, or None when there is none (or it cannot be read)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def put_back(path: Path, previous_text: str | None) -> None:
    """Restore a file written by a transaction that then did not commit: its previous text,
    or no file when there was none. Logged, never raised: the caller is already failing."""
    try:
        if previous_text is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, previous_text)
    except OSError:
        logger.exception("could not restore %s after a failed save", path)


# --- private files: only this user may read them, from their first byte --------------------
# Created with their mode, never chmod-ed after something was written.


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700; tighten it if it is already there.

    Tightening an existing folder is safe at any time: it only takes access away. Parents
    that this creates are 0700 too; existing parents are left as they are.
    """
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR_MODE:
        path.chmod(PRIVATE_DIR_MODE)
    return path


def private_file_create(path: Path, text: str = "") -> bool:
    """Create ``path`` as 0600 holding ``text``, unless it exists; whether this created it.

    The temporary file (0600 from the start) is linked into place, not renamed: two
    processes starting at once never see a half-written file, and the loser keeps the
    winner's content.
    """
    # A missing folder is made private; an existing one is the caller's (it may be /tmp).
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    tmp_name = _written_temporary(path, text)
    try:
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            return False
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return True
