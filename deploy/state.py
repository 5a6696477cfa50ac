"""Where a running system keeps its files: the state folder and the PostgreSQL-side runtime folder.

The state folder (default `var/` in the checkout, ignored by git) holds generated configuration,
logs, pid files and reports. PostgreSQL and Patroni run as an unprivileged user who may not be
able to enter the checkout at all (CI clones anywhere), so their data, sockets, logs and config
live in a runtime folder that user can reach, linked from the state folder as `pg/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kernel.names import member_name

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOPOLOGY = REPO_ROOT / "deploy" / "topology.yaml"
NETNS_TOPOLOGY = REPO_ROOT / "deploy" / "topology.netns.yaml"
DEFAULT_STATE_DIR = REPO_ROOT / "var"
RUNTIME_BASE = Path("/var/lib/rocars")
SECRET_NAMES = ("superuser", "replication", "rewind", "app")
# Process logs: the launching user reads and writes, its group (operators) reads; they may hold
# request details, so not the world (#10).
LOG_MODE = 0o640


def default_state_dir() -> Path:
    return Path(os.environ.get("ROCARS_STATE_DIR", str(DEFAULT_STATE_DIR))).resolve()


@dataclass(frozen=True)
class DbUser:
    """The account PostgreSQL and Patroni run as: `postgres` when we are root, else ourselves."""

    name: str
    uid: int
    gid: int

    @classmethod
    def current(cls) -> DbUser:
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise RuntimeError(
                    "no 'postgres' user: install postgresql-15 (make run does) or create it"
                ) from exc
        else:
            pw = pwd.getpwuid(os.geteuid())
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid)

    @property
    def is_other(self) -> bool:
        return self.uid != os.geteuid()


@dataclass(frozen=True)
class StateDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def logs(self) -> Path:
        return self.root / "log"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def topology_copy(self) -> Path:
        return self.root / "topology.yaml"

    @property
    def pki(self) -> Path:
        """The private CA and every certificate and key (deploy/pki.py); mode 0700."""
        return self.root / "pki"

    @property
    def runtime(self) -> Path:
        """PostgreSQL-side folder; outside the checkout when PostgreSQL runs as another user."""
        if os.geteuid() != 0:
            return self.root / "pg"
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return RUNTIME_BASE / f"{self.root.name}-{digest}"

    def member_dir(self, site: str) -> Path:
        return self.runtime / member_name(site)

    def pidfile(self, process: str) -> Path:
        return self.run / f"{process}.pid"

    def logfile(self, process: str) -> Path:
        return self.logs / f"{process}.log"

    def open_log(self, process: str) -> BinaryIO:
        """`process`'s log file opened for appending, mode LOG_MODE whatever the umask, and
        existing files (made 0644 by older versions) narrowed to it too."""
        path = self.logfile(process)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, LOG_MODE)
        try:
            os.fchmod(fd, LOG_MODE)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "ab")

    def node_config(self, site: str) -> Path:
        return self.config / f"node-{site}.yaml"

    def local_override(self, site: str) -> Path:
        return self.root / "contingency" / f"override-{site}.json"

    def ensure(self) -> None:
        for d in (self.config, self.logs, self.run, self.data, self.reports):
            d.mkdir(parents=True, exist_ok=True)

    def secrets(self) -> dict[str, str]:
        """Passwords for the database accounts, generated once and kept (mode 0600)."""
        path = self.config / "secrets.json"
        if path.exists():
            data: dict[str, str] = json.loads(path.read_text())
            if all(k in data for k in SECRET_NAMES):
                return data
        self.config.mkdir(parents=True, exist_ok=True)
        data = {k: secrets.token_urlsafe(18) for k in SECRET_NAMES}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        return data
