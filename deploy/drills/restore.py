"""The restore drill, `rocars drill restore` (#17 item 3): take a backup, write through the
API, record a time T, write more, restore a new PostgreSQL to T from the repository alone, and
check that exactly the writes acknowledged before T are there.

The boundary. Point-in-time recovery replays every transaction whose commit record carries a
timestamp at or before T and none after, and that timestamp is the primary's clock when the
commit record was written: before the client hears its acknowledgement (the commit waits for
the synchronous standby after the record is written), after the client sent the request. So T
is read from the primary's own clock (`clock_timestamp()`), on a connection opened
beforehand, bracketed by the drill's monotonic clock (sent at `t_sent`, answered at `t_recv`):

- an operation acknowledged before `t_sent` committed before the primary read T: present;
- an operation invoked after `t_recv` commits after T: absent;
- an operation in flight across the bracket (invoked before `t_recv`, not acknowledged before
  `t_sent`) may be either, but at most once (like an `info` operation).

No clock but the primary's decides, so the clocks of the drill's host and the database hosts
may differ; the load keeps running across T (no quiet moment is needed). The drill assumes no
failover happens while it runs (two primaries' clocks would both write commit timestamps).

Present: the history checker (deploy.drills.checker) on the operations before T, against the
restored copy: I1 (every acknowledged write there with its acknowledged content) and I2.
Absent: no idempotency record (each keyed write stores one in its own transaction) of any
operation invoked after T, and no manual clearance of theirs.

The copy: `pgbackrest restore --type=time` into a new data folder in a scratch state folder,
then a throwaway PostgreSQL started by hand (not Patroni) as the PostgreSQL user on a free
loopback port, with archiving off (it must never push its own timeline into the system's
archive), TLS off (only its Unix socket is used) and its own pg_hba (SCRAM, as the system's).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from deploy import admin, backups, configgen
from deploy.drills import checker, workload
from deploy.drills.history import Completion, Event, History, Invoke, Operation
from deploy.pg_roles import APP_DATABASE, OWNER_USER
from deploy.state import DbUser, StateDir
from deploy.topology import Topology
from kernel.errors import DrillError

Progress = Callable[[str], None]
PG_CTL = f"{configgen.PG_BIN_DIR}/pg_ctl"
# The restored copy's own pg_hba: SCRAM on the socket and on loopback, like the system's.
RESTORE_HBA = "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"


@dataclass(frozen=True)
class Mark:
    """T as the primary's clock read it, and the drill's monotonic bracket around the read."""

    t_sent: float
    t_recv: float
    target: datetime

    @property
    def target_text(self) -> str:
        """recovery_target_time's text: microseconds and an explicit UTC offset."""
        return self.target.isoformat(sep=" ", timespec="microseconds")


@dataclass(frozen=True)
class Split:
    """A history's operations on either side of a mark."""

    before: History  # acknowledged before T, plus the in-flight ones left open (either way)
    acknowledged: int  # operations acknowledged (2xx) before T
    in_flight: int  # operations that may be either side
    after: list[Operation]  # invoked after T: none may be in the restored copy


def split(history: History, mark: Mark) -> Split:
    """Cut `history` at `mark` (see the module's docstring for the three classes)."""
    ops = history.operations()
    keep_done = {op.id for op in ops if op.completion is not None and op.completion.t < mark.t_sent}
    invoked_before = {op.id for op in ops if op.invoke.t < mark.t_recv}

    def kept(e: Event) -> bool:
        if isinstance(e, Invoke):
            return e.id in invoked_before
        if isinstance(e, Completion):
            return e.id in keep_done
        return e.t < mark.t_sent  # a role sample

    events = [e for e in history.events if kept(e)]
    acknowledged = sum(1 for op in ops if op.id in keep_done and op.type == "ok")
    return Split(
        History(events),
        acknowledged,
        len(invoked_before - keep_done),
        [op for op in ops if op.invoke.t >= mark.t_recv],
    )


@dataclass
class RestoreReport:
    target: str
    backup_s: float
    backup_label: str
    database_bytes: int
    restore_s: float  # pgbackrest restore: the files back in a new data folder
    recovery_s: float  # PostgreSQL start to promotion: WAL replayed up to T
    acknowledged_before: int
    in_flight: int
    after: int
    consignments_restored: int
    anomalies: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.anomalies

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "passed": self.passed}

    def text(self) -> str:
        lines = [
            f"restore drill: {'PASSED' if self.passed else 'FAILED'}",
            f"  full backup {self.backup_label}: {self.backup_s:.1f} s"
            f" (database {self.database_bytes / 2**20:.1f} MiB)",
            f"  target T = {self.target}",
            f"  writes acknowledged before T: {self.acknowledged_before}, in flight across T:"
            f" {self.in_flight}, invoked after T: {self.after}",
            f"  restore (pgbackrest restore): {self.restore_s:.1f} s; recovery to T and"
            f" promotion: {self.recovery_s:.1f} s",
            f"  consignments in the restored copy: {self.consignments_restored}",
        ]
        lines += [f"  ANOMALY {a}" for a in self.anomalies[:50]]
        return "\n".join(lines)


async def mark_now(topo: Topology, state: StateDir) -> Mark:
    """Read T from the primary's clock, bracketed by ours (the connection is opened first, so
    the bracket holds one round trip)."""
    conn = await admin.connect_leader(topo, state, account="superuser")
    async with conn:
        t_sent = time.monotonic()
        cur = await conn.execute("SELECT clock_timestamp()")
        row = await cur.fetchone()
        t_recv = time.monotonic()
    assert row is not None
    return Mark(t_sent, t_recv, row[0])


def earliest_target(backup_stop: datetime) -> datetime:
    """The first T pgBackRest can restore to from a backup that stopped at `backup_stop`: it
    picks a set whose stop time is strictly earlier than T in whole seconds, so a T in the
    same second as the stop is refused ("unable to find backup set with stop time less than").
    """
    return backup_stop.replace(microsecond=0) + timedelta(seconds=1)


async def mark_after(read: Callable[[], Awaitable[Mark]], earliest: datetime) -> Mark:
    """Mark T with `read`, again until the primary's clock is at or past `earliest` (at most a
    second after a backup: the writes keep running meanwhile and all count as before T)."""
    while True:
        mark = await read()
        if mark.target >= earliest:
            return mark
        await asyncio.sleep(min(0.1, (earliest - mark.target).total_seconds()))


async def _until_acknowledged(history: History, n: int, *, after: float, wait_s: float) -> None:
    """Wait until `n` operations invoked after `after` are acknowledged."""
    deadline = time.monotonic() + wait_s
    while True:
        done = sum(1 for op in history.operations() if op.type == "ok" and op.invoke.t > after)
        if done >= n:
            return
        if time.monotonic() > deadline:
            raise DrillError(f"only {done} of {n} writes acknowledged in {wait_s:.0f} s")
        await asyncio.sleep(0.05)


# -- the throwaway PostgreSQL -----------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_db_user(argv: list[str], user: DbUser) -> list[str]:
    return ["runuser", "-u", user.name, "--", *argv] if user.is_other else argv


def _own(path: Path, user: DbUser, mode: int) -> None:
    os.chmod(path, mode)
    if user.is_other:
        os.chown(path, user.uid, user.gid)


@dataclass(frozen=True)
class Scratch:
    """The scratch folder of one restore: the data folder, its socket, log and pg_hba."""

    root: Path

    @classmethod
    def of(cls, scratch_state: StateDir) -> Scratch:
        # The runtime folder, not the state folder: the PostgreSQL user must reach it.
        return cls(scratch_state.runtime / "restore")

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sock(self) -> Path:
        return self.root / "sock"

    @property
    def log(self) -> Path:
        return self.root / "postgresql.log"

    @property
    def hba(self) -> Path:
        return self.root / "pg_hba.conf"

    def create(self, user: DbUser) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        for d in (self.root.parent, self.root, self.data, self.sock):
            d.mkdir(parents=True, exist_ok=True)
            _own(d, user, 0o700)
        self.hba.write_text(RESTORE_HBA)
        _own(self.hba, user, 0o600)


def server_options(scratch: Scratch, port: int) -> list[str]:
    """postgres -c settings of the copy: on the command line, so they override whatever the
    restored postgresql.conf (Patroni's, of the member it was backed up from) says."""
    return [
        f"port={port}",
        "listen_addresses=127.0.0.1",
        f"unix_socket_directories={scratch.sock}",
        f"hba_file={scratch.hba}",
        "ssl=off",
        "logging_collector=off",
        "archive_mode=off",
        "synchronous_standby_names=",
        "cluster_name=rocars-restore-drill",
    ]


def start_copy(scratch: Scratch, port: int, user: DbUser, *, timeout_s: int = 600) -> None:
    opts = " ".join(f"-c {shlex.quote(o)}" for o in server_options(scratch, port))
    argv = [PG_CTL, "-D", str(scratch.data), "-l", str(scratch.log), "-w"]
    argv += ["-t", str(timeout_s), "-o", opts, "start"]
    proc = subprocess.run(
        _as_db_user(argv, user), capture_output=True, text=True, cwd=scratch.root, check=False
    )
    if proc.returncode != 0:
        tail = (
            scratch.log.read_text(errors="replace").splitlines()[-15:]
            if scratch.log.exists()
            else []
        )
        raise DrillError(
            "the restored copy did not start: "
            + (proc.stderr.strip() or proc.stdout.strip())
            + "\n"
            + "\n".join(tail)
        )


def stop_copy(scratch: Scratch, user: DbUser) -> None:
    if (scratch.data / "postmaster.pid").exists():
        subprocess.run(
            _as_db_user([PG_CTL, "-D", str(scratch.data), "-m", "fast", "-w", "stop"], user),
            capture_output=True,
            cwd=scratch.root,
            check=False,
            timeout=120,
        )


async def _connect_copy(
    scratch: Scratch, port: int, state: StateDir, *, wait_s: float
) -> psycopg.AsyncConnection[Any]:
    """The copy's application database as the owner (who may create the checker's temporary
    tables), once it has finished recovery and been promoted."""
    conninfo = psycopg.conninfo.make_conninfo(
        host=str(scratch.sock),
        port=port,
        dbname=APP_DATABASE,
        user=OWNER_USER,
        passfile=str(state.pgpass("owner")),
        application_name="rocars-restore-drill",
    )
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
            cur = await conn.execute("SELECT pg_is_in_recovery()")
            row = await cur.fetchone()
            if row is not None and not row[0]:
                return conn
            await conn.close()
        except psycopg.OperationalError:
            pass
        if time.monotonic() > deadline:
            raise DrillError(f"the restored copy was not promoted within {wait_s:.0f} s")
        await asyncio.sleep(0.1)


_AFTER_KEYS = (
    "SELECT k.account_id, k.key FROM idempotency_keys k"
    " JOIN unnest(%(accounts)s::bigint[], %(keys)s::text[]) AS a(account_id, key)"
    " USING (account_id, key)"
)
_AFTER_CLEARANCES = "SELECT vrn FROM manual_clearances WHERE vrn = ANY(%(vrns)s)"


async def absent_after(conn: psycopg.AsyncConnection[Any], after: list[Operation]) -> list[str]:
    """What of the operations invoked after T the copy holds (nothing, when it is right)."""
    keyed = [op for op in after if op.invoke.key is not None]
    cur = await conn.execute(
        _AFTER_KEYS,
        {"accounts": [op.invoke.account for op in keyed], "keys": [op.invoke.key for op in keyed]},
    )
    found = [
        f"key {key} (account {acc}): invoked after T, yet in the copy"
        for acc, key in await cur.fetchall()
    ]
    vrns = [str(op.invoke.input["vrn"]) for op in after if op.kind == "clearance"]
    cur = await conn.execute(_AFTER_CLEARANCES, {"vrns": vrns})
    found += [
        f"manual clearance of {vrn}: invoked after T, yet in the copy"
        for (vrn,) in await cur.fetchall()
    ]
    return found


# -- the drill --------------------------------------------------------------------------------


async def run_drill(
    topo: Topology,
    state: StateDir,
    *,
    scratch_root: Path | None = None,
    writes_before: int = 60,
    writes_after: int = 60,
    keep: bool = False,
    progress: Progress = lambda _msg: None,
    settings: workload.Settings | None = None,
) -> RestoreReport:
    """The whole drill (see the module's docstring); the scratch folder is deleted afterwards
    unless `keep`."""
    pgb = await asyncio.to_thread(backups.prepare, topo, state)
    progress("taking a full backup")
    run = await asyncio.to_thread(backups.run_backup, topo, state, "full")
    progress(f"backup {run.backup.label} in {run.seconds:.1f} s")
    accounts = await workload.make_accounts(topo, state)
    history = History()
    async with workload.recording(topo, accounts, history, settings=settings):
        await _until_acknowledged(history, writes_before, after=float("-inf"), wait_s=120)
        mark = await mark_after(lambda: mark_now(topo, state), earliest_target(run.backup.stop))
        progress(f"T = {mark.target_text}")
        await _until_acknowledged(history, writes_after, after=mark.t_recv, wait_s=120)
    # The writes after T must reach the archive: recovery stops at the first commit after T,
    # and refuses to finish if the archive ends before one. `check` switches WAL and waits.
    await asyncio.to_thread(backups.check, topo, state)
    cut = split(history, mark)
    user = DbUser.current()
    scratch_state = StateDir((scratch_root or state.root / "restore-drill").resolve())
    scratch = Scratch.of(scratch_state)
    scratch.create(user)
    port = free_port()
    try:
        progress(f"restoring into {scratch.data}")
        restore_s = await asyncio.to_thread(
            backups.restore, pgb, scratch.data, target=mark.target_text
        )
        t0 = time.monotonic()
        await asyncio.to_thread(start_copy, scratch, port, user)
        conn = await _connect_copy(scratch, port, state, wait_s=600)
        recovery_s = time.monotonic() - t0
        async with conn:
            checked = await checker.check(conn, cut.before)
            anomalies = [f"{a.promise} {a.kind} op {a.op}: {a.detail}" for a in checked.anomalies]
            anomalies += await absent_after(conn, cut.after)
            leaders = {x.leader for x in history.samples() if x.leader is not None}
            if len(leaders) > 1:  # T and the commit times came from different clocks
                anomalies.append(f"the leader changed during the drill ({sorted(leaders)})")
            cur = await conn.execute("SELECT count(*) FROM consignments")
            row = await cur.fetchone()
    finally:
        await asyncio.to_thread(stop_copy, scratch, user)
        if not keep:  # the scratch state folder's runtime folder is ours alone
            shutil.rmtree(scratch_state.runtime, ignore_errors=True)
            shutil.rmtree(scratch_state.root, ignore_errors=True)
    report = RestoreReport(
        target=mark.target_text,
        backup_s=round(run.seconds, 2),
        backup_label=run.backup.label,
        database_bytes=run.backup.size,
        restore_s=round(restore_s, 2),
        recovery_s=round(recovery_s, 2),
        acknowledged_before=cut.acknowledged,
        in_flight=cut.in_flight,
        after=len(cut.after),
        consignments_restored=int(row[0]) if row else 0,
        anomalies=anomalies,
    )
    state.reports.mkdir(parents=True, exist_ok=True)
    stamp = mark.target.strftime("%Y%m%dT%H%M%S")
    path = state.reports / f"restore-drill-{stamp}.json"
    path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    progress(f"report in {path}")
    return report
