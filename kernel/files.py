"""Durable writes to local files: a whole-file replace and a directory flush that survive a
power cut. Standard library only.

Used by the files a node must not lose or half-write while PostgreSQL is down (I4): the key
cache and the local override (:mod:`contingency.keycache`, :mod:`contingency.override`) and
the clearance journal (:mod:`contingency.journal`). Every call blocks on an fsync; async
callers wrap it in ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Final

# Readable by the owner only, unless the caller says otherwise.
PRIVATE_MODE: Final = 0o600


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries, so a file created or renamed in it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, *, mode: int = PRIVATE_MODE) -> None:
    """Replace ``path`` by ``data``: readers see the old file or the new one, never a mix.

    The temporary file sits in the same directory because ``os.replace`` is atomic only within
    one filesystem; it is fsynced before the rename so the new name can never point at blocks
    that were not written yet, and the directory is fsynced after so the rename itself lasts.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            # fchmod, not the umask: the mode must not depend on who started the process.
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)
