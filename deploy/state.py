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
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from deploy.pg_roles import PGPASS_ACCOUNTS, pgpass_line
from kernel import tls
from kernel.names import member_name

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOPOLOGY = REPO_ROOT / "deploy" / "topology.yaml"
NETNS_TOPOLOGY = REPO_ROOT / "deploy" / "topology.netns.yaml"
DEFAULT_STATE_DIR = REPO_ROOT / "var"
RUNTIME_BASE = Path("/var/lib/rocars")
# Database passwords by account (#12 item 4): Patroni's superuser, replication and rewind users,
# the application, the schema owner (migrations), the monitoring role and the read role (#17
# item 5, created only with a read replica).
PG_SECRET_NAMES = ("superuser", "replication", "rewind", "app", "owner", "monitor", "reader")
# The control plane's credentials (#12 item 3), each also in a file of its own
# (`StateDir.secret_file`) that the process using it is given by path: Patroni's REST API
# (unsafe methods), Redis users by role and Sentinel, etcd users, and the key that opens the
# nodes' /metrics and /health to a tool outside the monitoring networks; HAProxy's stats page.
CONTROL_SECRET_NAMES = (
    "patroni-rest",
    "redis-node",
    "redis-replica",
    "redis-sentinel",
    "redis-monitor",
    "redis-admin",
    "sentinel",
    "etcd-root",
    "etcd-patroni",
    "etcd-node",
    "etcd-operator",
    "monitoring-key",
    "haproxy-stats",
    # The web pages' session secret (#15), the same on both nodes so a session outlives a
    # failover.
    "web-session",
)
SECRET_NAMES = PG_SECRET_NAMES + CONTROL_SECRET_NAMES
# The secrets folder and every file in it: the launching user only.
SECRETS_DIR_MODE = 0o700
SECRET_FILE_MODE = 0o600
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
    def ca_bundle(self) -> Path:
        """The certificates every client trusts (deploy/pki.py: the current CA, plus the
        previous one during a CA rotation)."""
        return self.pki / "ca-bundle.pem"

    def tls_client(self, role: str | None = None) -> ssl.SSLContext:
        """An operator tool's TLS context for the system's links (#12 item 2): trusts the CA
        bundle; with `role` (deploy.pki.CLIENT_ROLES, e.g. "rocars-admin"), presents that
        role's client certificate."""
        if role is None:
            return tls.client_context(self.ca_bundle)
        return tls.client_context(
            self.ca_bundle,
            cert=self.pki / f"client-{role}.crt",
            key=self.pki / f"client-{role}.key",
        )

    def pg_tls(self) -> dict[str, str]:
        """libpq settings of every connection to PostgreSQL (#12 item 2): TLS only, and the
        server's certificate checked against the system's CA and the address dialled."""
        return {"sslmode": "verify-full", "sslrootcert": str(self.ca_bundle)}

    @property
    def runtime(self) -> Path:
        """PostgreSQL-side folder; outside the checkout when PostgreSQL runs as another user."""
        if os.geteuid() != 0:
            return self.root / "pg"
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return RUNTIME_BASE / f"{self.root.name}-{digest}"

    def orphaned_database(self) -> Path | None:
        """The runtime folder when it holds PostgreSQL data although this state folder has no
        passwords yet (None otherwise): the data was made by a state folder at this path that
        was removed without `cluster down --purge`, and its roles' passwords are lost with it.
        Started on, Patroni would only fail to log in for minutes."""
        if any(p.exists() for p in self._secrets_json()):
            return None
        if any(self.runtime.glob("*/data/PG_VERSION")):
            return self.runtime
        return None

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

    @property
    def secrets_dir(self) -> Path:
        """Passwords and libpq password files (#12 item 4); mode 0700, files 0600."""
        return self.config / "secrets"

    def pgpass(self, account: str) -> Path:
        """The libpq password file (`passfile`) of `account`, one of pg_roles.PGPASS_ACCOUNTS
        ("app", "owner", "superuser", "reader"): one line, that role's password, nobody else's."""
        if account not in PGPASS_ACCOUNTS:
            raise ValueError(f"no password file for {account!r}")
        return self.secrets_dir / f"pgpass-{account}"

    @property
    def pg_monitor_password(self) -> Path:
        """The monitoring role's password alone (the exporter's DATA_SOURCE_PASS_FILE)."""
        return self.secrets_dir / "pg-monitor.password"

    def _secrets_json(self) -> tuple[Path, Path]:
        """Where the passwords are kept, and where versions before #12 item 4 kept them."""
        return self.secrets_dir / "secrets.json", self.config / "secrets.json"

    def secrets(self) -> dict[str, str]:
        """Passwords for the database accounts, generated once and kept, with the password
        files made from them; all 0600 in a 0700 folder. A password missing from an older
        state folder is added; the ones its cluster was made with are kept."""
        folder = self.secrets_dir
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, SECRETS_DIR_MODE)
        path, legacy = self._secrets_json()
        data: dict[str, str] = {}
        for found in (path, legacy):
            if found.exists():
                data = json.loads(found.read_text())
                break
        missing = [k for k in SECRET_NAMES if k not in data]
        data |= {k: secrets.token_urlsafe(24) for k in missing}
        if missing or not path.exists():
            _write_secret(path, json.dumps(data))
        legacy.unlink(missing_ok=True)
        for account, user in PGPASS_ACCOUNTS.items():
            _write_secret(self.pgpass(account), pgpass_line(user, data[account]))
        _write_secret(self.pg_monitor_password, data["monitor"])
        for name in CONTROL_SECRET_NAMES:
            _write_secret(self.secret_file(name), data[name])
        return data

    def secret_file(self, name: str) -> Path:
        """The file holding the one password `name` (one of CONTROL_SECRET_NAMES), for a
        process that is given it by path (never in argv or the environment)."""
        if name not in CONTROL_SECRET_NAMES:
            raise ValueError(f"no secret file for {name!r}")
        return self.secrets_dir / f"{name}.password"


def _write_secret(path: Path, text: str) -> None:
    """Write `text` to `path`, mode SECRET_FILE_MODE from the first byte (never briefly
    readable), unless it already holds exactly that; an existing file is narrowed too."""
    if path.exists() and path.read_text() == text:
        os.chmod(path, SECRET_FILE_MODE)
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, SECRET_FILE_MODE)  # whatever the umask
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
