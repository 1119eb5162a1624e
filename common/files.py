"""Atomic writes for the files other programs read (the override, the assignments copy)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half.

    The temporary file lives in the same folder so that the final ``os.replace`` is a rename
    within one filesystem, which POSIX makes atomic; the fsyncs make the rename survive a crash.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
