"""Backups with pgBackRest (#17 item 3): its files in the witness's backup folder, and the
commands `rocars backup run|status|check` and the restore drill use.

pgBackRest runs as the PostgreSQL user (`runuser` when we are root): that user runs
`archive-push` for PostgreSQL, so everything in the repository must stay its own. Its socket
connections to the members log in as the superuser with the password file deploy.backup_config
places beside the configuration. The configuration itself is generated (deploy.backup_config)
and written again before every command, so it always matches the topology.

`rocars backup status` reads `pgbackrest info --output=json`; `summarize` turns that document
into plain values (pure, unit-tested).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from deploy import backup_config
from deploy.backup_config import BackupPaths
from deploy.pg_roles import SUPERUSER, pgpass_line
from deploy.state import DbUser, StateDir
from deploy.topology import Topology
from kernel.errors import RocarsError

BackupType = Literal["full", "incr", "diff"]
BACKUP_TYPES: tuple[BackupType, ...] = ("full", "incr", "diff")
# pgbackrest info's stanza status codes (pgBackRest's command/info/info.c).
NO_STANZA = 1
NO_BACKUPS = 2


class BackupError(RocarsError):
    """A backup command failed; the message says what pgBackRest said and what to do."""


def _hint(stderr: str) -> str:
    """What to do about a pgBackRest error, from its text."""
    if "archive.info" in stderr or "backup.info" in stderr or "missing stanza" in stderr:
        return "no stanza yet: run 'rocars backup run' (it creates the stanza first)"
    if "archive_mode" in stderr or "archive_command" in stderr:
        return (
            "PostgreSQL is not archiving through pgBackRest: the topology needs a `backups`"
            " section, then 'rocars cluster up' and a restart of both members"
            " (patronictl restart) for archive_mode"
        )
    if "unable to find primary" in stderr or "unable to connect" in stderr.lower():
        return "no PostgreSQL primary reachable: check 'rocars cluster status'"
    if "unable to find backup set with stop time less than" in stderr:
        return (
            "no backup finished before that target (pgBackRest compares whole seconds): name a"
            " target at least one second after a backup's stop time ('rocars backup status')"
        )
    if "WAL segment" in stderr and "was not archived" in stderr:
        return (
            "WAL does not reach the repository: look at the PostgreSQL log (archive_command"
            " failures) and run 'rocars backup check'"
        )
    return "see the pgBackRest log in the backup folder's log/ for details"


@dataclass(frozen=True)
class Pgbackrest:
    """pgBackRest with this system's configuration, run as the PostgreSQL user."""

    paths: BackupPaths
    stanza: str
    user: DbUser

    def argv(self, command: str, options: Sequence[str] = ()) -> list[str]:
        base = [
            backup_config.PGBACKREST,
            f"--config={self.paths.config}",
            f"--stanza={self.stanza}",
            *options,
            command,
        ]
        if self.user.is_other:
            return ["runuser", "-u", self.user.name, "--", *base]
        return base

    def run(self, command: str, options: Sequence[str] = (), *, timeout: float = 3600) -> str:
        """Run `command`; its standard output. A failure raises BackupError with pgBackRest's
        own message and what to do."""
        if shutil.which(backup_config.PGBACKREST) is None:
            raise BackupError(
                "pgbackrest is not installed: run deploy/install.sh as root"
                " (or apt-get install pgbackrest)"
            )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGPASSFILE": str(self.paths.pgpass),
            "LANG": "C.UTF-8",
        }
        try:
            proc = subprocess.run(
                self.argv(command, options),
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.paths.root,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BackupError(f"pgbackrest {command} did not finish in {timeout:.0f} s") from exc
        if proc.returncode != 0:
            said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-5:]
            text = "\n".join(said) or f"exit status {proc.returncode}"
            raise BackupError(f"pgbackrest {command} failed: {text}\n{_hint(text)}")
        return proc.stdout


def _write(path: Path, text: str, mode: int, user: DbUser) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    if user.is_other:
        os.chown(tmp, user.uid, user.gid)
    tmp.replace(path)


def write_files(topo: Topology, state: StateDir) -> BackupPaths:
    """The backup folder (repository, logs, locks, spool), pgBackRest's configuration and its
    password file, all the PostgreSQL user's. Safe to repeat."""
    backup_config.settings(topo)  # a clear error when the topology has no backups section
    user = DbUser.current()
    paths = BackupPaths.of(state.runtime, topo)
    for d in paths.folders():
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        if user.is_other:
            os.chown(d, user.uid, user.gid)
    pgs = backup_config.members(topo, {s: state.member_dir(s) for s in topo.data_sites})
    _write(paths.config, backup_config.pgbackrest_conf(topo, paths, pgs), 0o640, user)
    password = state.secrets()["superuser"]
    _write(paths.pgpass, pgpass_line(SUPERUSER, password), 0o600, user)
    return paths


def prepare(topo: Topology, state: StateDir) -> Pgbackrest:
    """pgBackRest for this system, its files written."""
    return Pgbackrest(write_files(topo, state), backup_config.stanza(topo), DbUser.current())


def ensure_stanza(pgb: Pgbackrest) -> None:
    """Create the stanza (repository folders and info files) unless it exists; checks that
    both members' configuration and the repository agree."""
    pgb.run("stanza-create", timeout=120)


def _require_archiving(topo: Topology) -> None:
    cfg = backup_config.settings(topo)
    if not cfg.archive:
        raise BackupError(
            "WAL archiving is off (backups.archive: false): a backup cannot be made consistent"
            " without it; set backups.archive: true, run 'rocars cluster up' and restart both"
            " members (patronictl restart) for archive_mode"
        )


# -- what `pgbackrest info` says --------------------------------------------------------------


@dataclass(frozen=True)
class BackupSummary:
    label: str
    type: str
    start: datetime
    stop: datetime
    size: int  # bytes of the database it copied
    repo_size: int  # bytes it takes in the repository (compressed)
    wal_start: str | None
    wal_stop: str | None
    prior: str | None  # the backup an incremental or differential builds on

    @property
    def duration_s(self) -> float:
        return (self.stop - self.start).total_seconds()


@dataclass(frozen=True)
class StanzaStatus:
    stanza: str
    code: int
    message: str
    backups: list[BackupSummary] = field(default_factory=list)
    wal_min: str | None = None
    wal_max: str | None = None

    @property
    def exists(self) -> bool:
        return self.code != NO_STANZA

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        for b in doc["backups"]:
            b["start"], b["stop"] = b["start"].isoformat(), b["stop"].isoformat()
        return doc

    def text(self) -> str:
        if not self.exists:
            return (
                f"stanza {self.stanza}: no stanza yet ({self.message}); run"
                " 'rocars backup run --type full' to create it and take the first backup"
            )
        lines = [f"stanza {self.stanza}: {self.message}"]
        if self.wal_min is not None:
            lines.append(f"WAL archived: {self.wal_min} .. {self.wal_max}")
        if not self.backups:
            lines.append("no backups yet: run 'rocars backup run --type full'")
        for b in self.backups:
            lines.append(
                f"  {b.label:26s} {b.type:4s} {b.start:%Y-%m-%d %H:%M:%S}Z"
                f" .. {b.stop:%H:%M:%S}Z ({b.duration_s:.1f} s)"
                f"  size {_mib(b.size)}, in repository {_mib(b.repo_size)}"
                f"  WAL {b.wal_start} .. {b.wal_stop}"
            )
        return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _when(unix: Any) -> datetime:
    return datetime.fromtimestamp(float(unix), UTC)


def summarize(doc: Any, stanza: str) -> StanzaStatus:
    """`pgbackrest info --output=json` (a list of stanzas) as plain values for `stanza`."""
    if not isinstance(doc, list):
        raise BackupError("pgbackrest info gave no list of stanzas; is it pgBackRest 2.x?")
    entry = next((s for s in doc if isinstance(s, dict) and s.get("name") == stanza), None)
    if entry is None:
        return StanzaStatus(stanza, NO_STANZA, "missing stanza path")
    status = entry.get("status", {})
    archives = entry.get("archive") or [{}]
    backups = [
        BackupSummary(
            label=b["label"],
            type=b["type"],
            start=_when(b["timestamp"]["start"]),
            stop=_when(b["timestamp"]["stop"]),
            size=int(b["info"]["size"]),
            repo_size=int(b["info"]["repository"]["size"]),
            wal_start=(b.get("archive") or {}).get("start"),
            wal_stop=(b.get("archive") or {}).get("stop"),
            prior=b.get("prior"),
        )
        for b in entry.get("backup", [])
    ]
    return StanzaStatus(
        stanza,
        int(status.get("code", 0)),
        str(status.get("message", "")),
        backups,
        archives[-1].get("min"),
        archives[-1].get("max"),
    )


# -- the commands ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupRun:
    type: BackupType
    seconds: float  # wall time of the whole command, stanza check included
    backup: BackupSummary


def status(topo: Topology, state: StateDir) -> StanzaStatus:
    pgb = prepare(topo, state)
    out = pgb.run("info", ["--output=json"], timeout=120)
    try:
        doc = json.loads(out)
    except ValueError as exc:
        raise BackupError(f"pgbackrest info gave no JSON: {out[:200]!r}") from exc
    return summarize(doc, pgb.stanza)


def run_backup(topo: Topology, state: StateDir, kind: BackupType = "full") -> BackupRun:
    """Take a backup of the primary (pgBackRest finds which member it is), creating the stanza
    first when there is none."""
    if kind not in BACKUP_TYPES:
        raise BackupError(f"unknown backup type {kind!r}: use one of {', '.join(BACKUP_TYPES)}")
    _require_archiving(topo)
    pgb = prepare(topo, state)
    t0 = time.monotonic()
    ensure_stanza(pgb)
    pgb.run("backup", [f"--type={kind}"])
    seconds = time.monotonic() - t0
    st = status(topo, state)
    if not st.backups:
        raise BackupError("pgbackrest backup finished but info lists no backup")
    return BackupRun(kind, seconds, st.backups[-1])


def check(topo: Topology, state: StateDir) -> str:
    """`pgbackrest check`: the configuration, the connection to the primary, and that a WAL
    segment switched now reaches the repository (within archive-timeout)."""
    _require_archiving(topo)
    pgb = prepare(topo, state)
    pgb.run("check", timeout=180)
    return f"stanza {pgb.stanza}: configuration, primary and WAL archiving are fine"


def restore(pgb: Pgbackrest, data_dir: Path, *, target: str) -> float:
    """Restore the stanza into the empty folder `data_dir`, to replay WAL up to the
    commit-time `target` (then promote), with archiving off in the copy: it must never push
    its own new timeline into this system's archive. Returns the seconds it took."""
    t0 = time.monotonic()
    pgb.run(
        "restore",
        [
            f"--pg1-path={data_dir}",
            "--type=time",
            f"--target={target}",
            "--target-action=promote",
            "--archive-mode=off",
        ],
    )
    return time.monotonic() - t0
