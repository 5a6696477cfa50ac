"""The on-disk journal of manual clearances and audit events while PostgreSQL is down (adapter).

Serves the reconciliation core: what is journalled here is later planned for import by
:func:`contingency.reconcile_match.plan_import` (exactly once, by record UUID) and linked to
bundles by :func:`contingency.reconcile_match.match_records` (I4).

Durability (I1, I4): SQLite in WAL mode with ``synchronous=FULL``, so SQLite fsyncs the WAL at
every commit, and each append commits before it returns. A 202 sent after
:meth:`Journal.append_clearance` returns therefore survives the process being SIGKILLed and
the host losing power.

Idempotency: an append whose UUID is already journalled with the same content is a retry and
returns that UUID; with different content it raises :class:`JournalConflict`.
:meth:`Journal.append_clearance_once` (a clearance under an Idempotency-Key) answers the
journalled record instead, for the caller to compare. PostgreSQL, not
``imported_at``, decides what was imported: :meth:`Journal.mark_imported` only keeps
:meth:`Journal.pending_clearances` short, so a crash between the import and the marking merely
makes the next run skip those UUIDs again.

Blocking: every method does blocking disk I/O (an fsync per append). Async callers wrap each
call in ``asyncio.to_thread``; a journal holds one connection behind a lock, so calls from any
thread are safe. There are deliberately no async wrappers here, so there is one way to call it.

Another node's journal (copied here after that node died, with its ``-wal`` file if it has
one) is read with :meth:`Journal.open_readonly`, which never writes to it.

Set aside: a record PostgreSQL refuses (a NUL in a string, say, journalled before the API
refused them) is marked with :meth:`Journal.set_aside` and the reason, and is no longer pending,
so one bad record cannot keep reconciliation (and so manual mode) from ever finishing. It stays
in the file for an officer to deal with by hand (:meth:`Journal.set_aside_records`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid as uuid_lib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal, TypeVar, cast, get_args

from contingency.reconcile_match import ClearanceDecision, canonical_uuid
from kernel.errors import JournalError
from kernel.files import fsync_directory

SCHEMA_VERSION: Final = 1
# Long enough to ride out another connection's commit (an fsync), short enough to answer.
BUSY_TIMEOUT_S: Final = 10.0
# Officer names, plates and decisions: readable by the node's user only.
JOURNAL_MODE: Final = 0o600

_DECISIONS: Final = frozenset(get_args(ClearanceDecision))
_T = TypeVar("_T")

# "before"/"after" are SQL keywords, hence quoted.
_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS clearances (
        uuid TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        officer TEXT NOT NULL,
        lbcp TEXT NOT NULL,
        vrn TEXT NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('release', 'inspect', 'refuse')),
        documents TEXT NOT NULL,
        ccrns TEXT NOT NULL,
        cleared_at TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        imported_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS audit (
        uuid TEXT PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        "before" TEXT,
        "after" TEXT,
        imported_at TEXT
    )""",
    # Added after version 1 files existed; IF NOT EXISTS adds it to them, so the version stays.
    """CREATE TABLE IF NOT EXISTS set_aside (
        uuid TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('clearance', 'audit')),
        reason TEXT NOT NULL,
        at TEXT NOT NULL
    )""",
)
# Rows of the clearances or audit table that are still to be imported.
_PENDING: Final = "imported_at IS NULL AND uuid NOT IN (SELECT uuid FROM set_aside)"
# Content columns: a retried append must match these exactly to count as the same record.
# (recorded_at and imported_at are not content: a retry may come later.)
_CLEARANCE_COLS: Final = "node, officer, lbcp, vrn, decision, documents, ccrns, cleared_at"
_AUDIT_COLS: Final = 'at, actor, action, subject, "before", "after"'


class JournalConflict(JournalError):
    """A record with this UUID is already journalled with different content."""


# --- values ----------------------------------------------------------------------------------


def _utc(name: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name}: must be a timezone-aware datetime")
    return value.astimezone(UTC)


def _strings(name: str, values: object) -> tuple[str, ...]:
    # A bare string is iterable too; "ABC" must not become ("A", "B", "C").
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"{name}: must be a list of strings")
    items = tuple(values)
    if not all(isinstance(v, str) for v in items):
        raise ValueError(f"{name}: must be a list of strings")
    return items


def _json_object(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: must be a JSON object or None")
    try:
        # NaN is not JSON (PostgreSQL's jsonb refuses it); sorted keys make retries comparable.
        return json.dumps(dict(value), sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: not JSON-serialisable: {exc}") from None


@dataclass(frozen=True)
class ClearanceRecord:
    """One truck cleared by hand. Field rules (lengths, known LBCP, VRN form) are checked by
    the caller; this only insists on what storing and reading back need.

    ``uuid`` None: the journal makes a uuid4. ``recorded_at`` None: the time of the append.
    Records read back from the journal have both set.
    """

    node: str
    officer: str
    lbcp: str
    vrn: str
    decision: ClearanceDecision
    documents: tuple[str, ...]
    ccrns: tuple[str, ...]
    cleared_at: datetime
    uuid: str | None = None
    recorded_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("node", "officer", "lbcp", "vrn"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}: must be a string")
        if self.decision not in _DECISIONS:
            raise ValueError(f"decision: must be one of {sorted(_DECISIONS)}")
        object.__setattr__(self, "documents", _strings("documents", self.documents))
        object.__setattr__(self, "ccrns", _strings("ccrns", self.ccrns))
        object.__setattr__(self, "cleared_at", _utc("cleared_at", self.cleared_at))
        if self.uuid is not None:
            object.__setattr__(self, "uuid", canonical_uuid(self.uuid))
        if self.recorded_at is not None:
            object.__setattr__(self, "recorded_at", _utc("recorded_at", self.recorded_at))

    def _content(self) -> tuple[str, ...]:
        return (
            self.node,
            self.officer,
            self.lbcp,
            self.vrn,
            self.decision,
            json.dumps(list(self.documents), ensure_ascii=False),
            json.dumps(list(self.ccrns), ensure_ascii=False),
            self.cleared_at.isoformat(),
        )


@dataclass(frozen=True)
class AuditEvent:
    """One audit log entry (activation, deactivation, clearance, ...) made while PG is down.

    ``before``/``after`` are JSON objects (or None), checked to serialise when constructed.
    """

    at: datetime
    actor: str
    action: str
    subject: str
    before: Mapping[str, object] | None = None
    after: Mapping[str, object] | None = None
    uuid: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _utc("at", self.at))
        for name in ("actor", "action", "subject"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}: must be a string")
        _json_object("before", self.before)
        _json_object("after", self.after)
        if self.uuid is not None:
            object.__setattr__(self, "uuid", canonical_uuid(self.uuid))

    def _content(self) -> tuple[str | None, ...]:
        return (
            self.at.isoformat(),
            self.actor,
            self.action,
            self.subject,
            _json_object("before", self.before),
            _json_object("after", self.after),
        )


@dataclass(frozen=True)
class JournalCounts:
    """How many records the journal holds, how many are still to be imported, and how many
    were set aside (refused by PostgreSQL; neither imported nor pending)."""

    clearances: int
    clearances_pending: int
    audit: int
    audit_pending: int
    set_aside: int = 0


@dataclass(frozen=True)
class SetAside:
    """A record reconciliation could not import, and why."""

    uuid: str
    kind: Literal["clearance", "audit"]
    reason: str
    at: datetime


def _load_strings(name: str, text: str) -> tuple[str, ...]:
    return _strings(name, json.loads(text))


def _load_object(name: str, text: str | None) -> dict[str, object] | None:
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{name}: must be a JSON object")
    return value


# --- the journal -----------------------------------------------------------------------------


def _create_file(path: Path) -> bool:
    """Create an empty journal file with its mode (SQLite gives -wal/-shm the same one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, JOURNAL_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _connect(target: str, *, uri: bool) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) so a commit
    # happens exactly where this module says. check_same_thread=False: calls arrive from
    # asyncio.to_thread's workers; Journal._lock serialises them.
    return sqlite3.connect(
        target, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False, uri=uri
    )


class Journal:
    """The journal at ``path``, created if missing, opened for appending."""

    _conn: sqlite3.Connection | None

    def __init__(self, path: Path) -> None:
        self._setup(Path(path), readonly=False)

    @classmethod
    def open_readonly(cls, path: Path) -> Journal:
        """Open an existing journal (another node's) for reading only; it is never modified."""
        journal = cls.__new__(cls)
        journal._setup(Path(path), readonly=True)
        return journal

    def _setup(self, path: Path, *, readonly: bool) -> None:
        self._path = path
        self._readonly = readonly
        self._lock = threading.Lock()
        self._conn = None
        if readonly:
            if not path.is_file():
                raise FileNotFoundError(f"no journal at {path}")
            created = False
            conn = _connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        else:
            created = _create_file(path)
            conn = _connect(str(path), uri=False)
        try:
            self._prepare(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise JournalError(f"{path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        if created:
            fsync_directory(path.parent)  # the new file's name must outlive a power cut too

    def _prepare(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if self._readonly:
            if version != SCHEMA_VERSION:
                raise JournalError(f"{self._path}: not a journal (schema version {version})")
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'set_aside'"
            ).fetchone():
                # Written before set-aside existed, so nothing in it was set aside; a temporary
                # (connection-only) empty table lets the same queries run.
                conn.execute(f"CREATE TEMP {_SCHEMA[2].removeprefix('CREATE ')}")
            conn.execute("PRAGMA query_only = ON")
            return
        if version not in (0, SCHEMA_VERSION):
            raise JournalError(f"{self._path}: unsupported journal schema version {version}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            # e.g. a filesystem without shared memory: refuse rather than journal less safely.
            raise JournalError(f"{self._path}: SQLite refused WAL mode (got {mode!r})")
        # Per connection, not stored in the file: FULL fsyncs the WAL at every commit.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @property
    def path(self) -> Path:
        return self._path

    @property
    def readonly(self) -> bool:
        return self._readonly

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise JournalError(f"{self._path}: journal is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:  # disk full, I/O error, locked too long: callers see ours
                raise JournalError(f"{self._path}: {exc}") from exc

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        if self._readonly:
            raise JournalError(f"{self._path}: opened read-only")
        with self._reading() as conn:
            # IMMEDIATE takes the write lock up front, so the existence check and the insert
            # below see the same state even with another process appending to this file.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    def _append(
        self, table: str, cols: str, uid: str, content: tuple[object, ...], extra: dict[str, str]
    ) -> str:
        names = ", ".join(["uuid", cols, *extra])
        values = (uid, *content, *extra.values())
        marks = ", ".join("?" * len(values))
        with self._writing() as conn:
            row = conn.execute(f"SELECT {cols} FROM {table} WHERE uuid = ?", (uid,)).fetchone()
            if row is None:
                conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", values)
            elif tuple(row) != content:
                raise JournalConflict(f"uuid: {uid} is already journalled with other content")
        return uid

    def append_clearance(self, record: ClearanceRecord) -> str:
        """Journal ``record`` durably (fsynced before returning) and return its UUID."""
        uid = record.uuid or str(uuid_lib.uuid4())
        recorded_at = (record.recorded_at or datetime.now(UTC)).isoformat()
        extra = {"recorded_at": recorded_at}
        return self._append("clearances", _CLEARANCE_COLS, uid, record._content(), extra)

    def append_clearance_once(self, record: ClearanceRecord) -> tuple[ClearanceRecord, bool]:
        """Journal ``record`` (it must carry its UUID) unless a clearance with that UUID is
        journalled already; answers the clearance as journalled and whether it was appended
        now. An existing one is answered whatever its content, unlike
        :meth:`append_clearance`: a retry under an Idempotency-Key (whose UUID is derived from
        the key) defaults its times afresh, and only the caller knows which fields its request
        set, so the caller decides whether it is the same clearance."""
        if record.uuid is None:
            raise ValueError("uuid: append_clearance_once needs the record's UUID")
        recorded_at = record.recorded_at or datetime.now(UTC)
        names = f"uuid, {_CLEARANCE_COLS}, recorded_at"
        with self._writing() as conn:
            row = conn.execute(
                f"SELECT {names} FROM clearances WHERE uuid = ?", (record.uuid,)
            ).fetchone()
            if row is None:
                values = (record.uuid, *record._content(), recorded_at.isoformat())
                marks = ", ".join("?" * len(values))
                conn.execute(f"INSERT INTO clearances ({names}) VALUES ({marks})", values)
        if row is not None:
            return self._decode(tuple(row), _clearance), False
        return replace(record, recorded_at=recorded_at), True

    def clearance(self, uuid: str) -> ClearanceRecord | None:
        """The journalled clearance ``uuid`` (pending, imported or set aside), or None."""
        key = canonical_uuid(uuid)
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT uuid, {_CLEARANCE_COLS}, recorded_at FROM clearances WHERE uuid = ?",
                (key,),
            ).fetchone()
        return None if row is None else self._decode(tuple(row), _clearance)

    def append_audit(self, event: AuditEvent) -> str:
        """Journal ``event`` durably (fsynced before returning) and return its UUID."""
        uid = event.uuid or str(uuid_lib.uuid4())
        return self._append("audit", _AUDIT_COLS, uid, event._content(), {})

    def pending_clearances(self) -> tuple[ClearanceRecord, ...]:
        """Clearances not marked imported, in the order they were journalled."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT uuid, {_CLEARANCE_COLS}, recorded_at FROM clearances "
                f"WHERE {_PENDING} ORDER BY rowid"
            ).fetchall()
        return tuple(self._decode(row, _clearance) for row in rows)

    def pending_audit(self) -> tuple[AuditEvent, ...]:
        """Audit events not marked imported, in the order they were journalled."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT uuid, {_AUDIT_COLS} FROM audit WHERE {_PENDING} ORDER BY rowid"
            ).fetchall()
        return tuple(self._decode(row, _audit) for row in rows)

    def _decode(self, row: tuple[object, ...], build: Callable[[tuple[object, ...]], _T]) -> _T:
        try:
            return build(row)
        except (ValueError, TypeError) as exc:
            raise JournalError(f"{self._path}: record {row[0]}: {exc}") from exc

    def mark_imported(self, uuids: Iterable[str], at: datetime) -> int:
        """Mark these records (clearances or audit) imported at ``at``; returns how many were
        newly marked. Already marked ones keep their first time; unknown UUIDs are ignored.
        """
        keys = [canonical_uuid(u, f"uuids[{i}]") for i, u in enumerate(uuids)]
        stamp = _utc("at", at).isoformat()
        marked = 0
        with self._writing() as conn:
            for table in ("clearances", "audit"):
                cursor = conn.executemany(
                    f"UPDATE {table} SET imported_at = ? WHERE uuid = ? AND imported_at IS NULL",
                    [(stamp, key) for key in keys],
                )
                marked += cursor.rowcount
        return marked

    def set_aside(self, uuid: str, reason: str, at: datetime) -> bool:
        """Mark this pending record (clearance or audit) as refused, with ``reason``: it is no
        longer pending. Returns False when it is unknown, imported or already set aside."""
        key = canonical_uuid(uuid)
        stamp = _utc("at", at).isoformat()
        with self._writing() as conn:
            for kind, table in (("clearance", "clearances"), ("audit", "audit")):
                if conn.execute(
                    f"SELECT 1 FROM {table} WHERE uuid = ? AND {_PENDING}", (key,)
                ).fetchone():
                    conn.execute(
                        "INSERT INTO set_aside (uuid, kind, reason, at) VALUES (?, ?, ?, ?)",
                        (key, kind, reason, stamp),
                    )
                    return True
        return False

    def set_aside_records(self) -> tuple[SetAside, ...]:
        """Every record set aside, in the order they were set aside."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT uuid, kind, reason, at FROM set_aside ORDER BY rowid"
            ).fetchall()
        return tuple(
            SetAside(
                str(u), cast(Literal["clearance", "audit"], k), str(r), datetime.fromisoformat(a)
            )
            for u, k, r, a in rows
        )

    def counts(self) -> JournalCounts:
        """Totals, still-to-import and set-aside counts, for /health, /metrics and the reconcile
        report."""
        sql = f"SELECT count(*), coalesce(sum({_PENDING}), 0) FROM {{}}"
        with self._reading() as conn:
            clearances, clearances_pending = conn.execute(sql.format("clearances")).fetchone()
            audit, audit_pending = conn.execute(sql.format("audit")).fetchone()
            (set_aside,) = conn.execute("SELECT count(*) FROM set_aside").fetchone()
        return JournalCounts(clearances, clearances_pending, audit, audit_pending, set_aside)


def _clearance(row: tuple[object, ...]) -> ClearanceRecord:
    uid, node, officer, lbcp, vrn, decision, documents, ccrns, cleared_at, recorded_at = row
    return ClearanceRecord(
        node=str(node),
        officer=str(officer),
        lbcp=str(lbcp),
        vrn=str(vrn),
        decision=cast(ClearanceDecision, decision),  # checked by __post_init__
        documents=_load_strings("documents", str(documents)),
        ccrns=_load_strings("ccrns", str(ccrns)),
        cleared_at=datetime.fromisoformat(str(cleared_at)),
        uuid=str(uid),
        recorded_at=datetime.fromisoformat(str(recorded_at)),
    )


def _audit(row: tuple[object, ...]) -> AuditEvent:
    uid, at, actor, action, subject, before, after = row
    return AuditEvent(
        at=datetime.fromisoformat(str(at)),
        actor=str(actor),
        action=str(action),
        subject=str(subject),
        before=_load_object("before", None if before is None else str(before)),
        after=_load_object("after", None if after is None else str(after)),
        uuid=str(uid),
    )
