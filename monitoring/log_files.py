"""The node's JSON log file (#13 item 5): `<state>/log/node-<site>.jsonl`, rotated by size.
Apart from monitoring.logs, which the supervisor imports: it needs no file, and
logging.handlers would cost it 0.7 MiB."""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
from pathlib import Path
from typing import Final

# Files rotate by size, so a node's logs take at most (BACKUPS + 1) * MAX_BYTES = 300 MiB of
# disk whatever the load. An access line is about 300 bytes: at the measured peak of ~1,000
# requests/s one file holds about 3 minutes, at ordinary load hours; keeping logs longer is
# the job of whatever ships them off the host.
MAX_BYTES: Final = 50 * 1024**2
BACKUPS: Final = 5


class JsonLinesFile(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler that formats each record once and never stats the file: the
    standard one formats every record twice (once to decide whether to rotate) and checks
    the path on each. The size is counted here; the file is opened with `mode` whatever the
    umask (logs may hold request details: not for the world)."""

    def __init__(
        self, path: Path, *, mode: int, max_bytes: int = MAX_BYTES, backups: int = BACKUPS
    ) -> None:
        self.file_mode = mode
        self.size = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
        )

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, self.file_mode)
        try:
            os.fchmod(fd, self.file_mode)
            self.size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        return open(fd, "a", encoding="utf-8")  # the handler closes it

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            size = len(line) if line.isascii() else len(line.encode())
            if self.stream is None:
                self.stream = self._open()
            if self.size and self.size + size > self.maxBytes:
                self.doRollover()
                if self.stream is None:
                    self.stream = self._open()
            self.stream.write(line)
            self.stream.flush()
            self.size += size
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
