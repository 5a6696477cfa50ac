"""Tests for contingency.journal: the SQLite journal kept while PostgreSQL is down."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from contingency.journal import (
    AuditEvent,
    ClearanceRecord,
    Journal,
    JournalConflict,
    JournalCounts,
    JournalError,
)

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
HKT = timezone(timedelta(hours=8))
REPO = Path(__file__).resolve().parents[2]


def _record(**kw: Any) -> ClearanceRecord:
    args: dict[str, Any] = {
        "node": "node-a",
        "officer": "officer-17",
        "lbcp": "LMC",
        "vrn": "AB1234",
        "decision": "release",
        "documents": ("manifest 889-2",),
        "ccrns": ("CCRN1",),
        "cleared_at": T0,
    }
    return ClearanceRecord(**{**args, **kw})


def _event(**kw: Any) -> AuditEvent:
    args: dict[str, Any] = {
        "at": T0,
        "actor": "officer-17",
        "action": "contingency.activate",
        "subject": "contingency",
        "before": {"mode": "normal"},
        "after": {"mode": "manual", "scope": None},
    }
    return AuditEvent(**{**args, **kw})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal" / "node-a.sqlite3"


# --- opening ---------------------------------------------------------------------------------


def test_new_journal_is_wal_with_full_sync_and_private(path: Path) -> None:
    """A new journal is in WAL mode, fsyncs every commit (synchronous=FULL) and is mode 0600."""
    with Journal(path) as journal:
        assert journal._conn is not None
        assert journal._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_not_a_database_raises_journal_error(tmp_path: Path) -> None:
    """A file that is not an SQLite database is refused with JournalError, not used."""
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database at all, just some bytes" * 10)
    with pytest.raises(JournalError, match="not a database"):
        Journal(path)


def test_foreign_schema_version_refused(tmp_path: Path) -> None:
    """A database with another schema version is not taken over as a journal."""
    path = tmp_path / "other.sqlite3"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 7")
    with pytest.raises(JournalError, match="schema version 7"):
        Journal(path)


def test_closed_journal_refuses_calls(path: Path) -> None:
    """After close() every call raises JournalError, and closing again is harmless."""
    journal = Journal(path)
    journal.close()
    journal.close()
    with pytest.raises(JournalError, match="closed"):
        journal.append_clearance(_record())
    with pytest.raises(JournalError, match="closed"):
        journal.counts()


# --- appending -------------------------------------------------------------------------------


def test_append_returns_uuid4_and_record_reads_back(path: Path) -> None:
    """An append without UUID gets a fresh uuid4; the record reads back field for field."""
    with Journal(path) as journal:
        uid = journal.append_clearance(_record(ccrns=("C1", "C2"), documents=("m1", "m2")))
        (back,) = journal.pending_clearances()
    assert uuid.UUID(uid).version == 4
    assert back.uuid == uid
    assert back.recorded_at is not None
    expected = _record(
        ccrns=("C1", "C2"), documents=("m1", "m2"), uuid=uid, recorded_at=back.recorded_at
    )
    assert back == expected


def test_given_uuid_is_kept_in_canonical_form(path: Path) -> None:
    """A caller's UUID (e.g. from an Idempotency-Key) is stored in lowercase hyphenated form."""
    raw = "{0F8FAD5B-D9CB-469F-A165-70867728950E}"
    with Journal(path) as journal:
        uid = journal.append_clearance(_record(uuid=raw))
        assert uid == "0f8fad5b-d9cb-469f-a165-70867728950e"
        assert [r.uuid for r in journal.pending_clearances()] == [uid]


def test_times_are_stored_in_utc(path: Path) -> None:
    """cleared_at given in Hong Kong time is stored and read back as the same instant in UTC."""
    with Journal(path) as journal:
        journal.append_clearance(_record(cleared_at=T0.astimezone(HKT)))
        (back,) = journal.pending_clearances()
    assert back.cleared_at == T0
    assert back.cleared_at.utcoffset() == timedelta(0)


def test_retry_with_same_uuid_and_content_is_idempotent(path: Path) -> None:
    """Appending the same UUID with the same content again stores it once (a retry)."""
    uid = str(uuid.uuid4())
    with Journal(path) as journal:
        assert journal.append_clearance(_record(uuid=uid)) == uid
        later = T0 + timedelta(minutes=5)
        assert journal.append_clearance(_record(uuid=uid, recorded_at=later)) == uid
        assert journal.counts().clearances == 1


def test_same_uuid_with_other_content_conflicts(path: Path) -> None:
    """Reusing a UUID for different content raises JournalConflict and keeps the first record."""
    uid = str(uuid.uuid4())
    with Journal(path) as journal:
        journal.append_clearance(_record(uuid=uid))
        with pytest.raises(JournalConflict, match=uid):
            journal.append_clearance(_record(uuid=uid, decision="inspect"))
        (back,) = journal.pending_clearances()
    assert back.decision == "release"


def test_append_once_answers_the_first_record_whatever_the_retry_holds(path: Path) -> None:
    """#14 item 3: `append_clearance_once` appends a UUID's first record only and answers the
    journalled one (with its own times) to every later append of that UUID, whatever its
    content, for the caller to compare; `clearance` finds it by UUID, or answers None."""
    uid = str(uuid.uuid4())
    first = _record(uuid=uid, recorded_at=T0)
    later = T0 + timedelta(minutes=5)
    with Journal(path) as journal:
        assert journal.clearance(uid) is None
        assert journal.append_clearance_once(first) == (first, True)
        retry = _record(uuid=uid, cleared_at=later, recorded_at=later, decision="inspect")
        assert journal.append_clearance_once(retry) == (first, False)
        assert journal.clearance(uid) == first
        assert journal.counts().clearances == 1
        with pytest.raises(ValueError, match="uuid"):
            journal.append_clearance_once(_record())


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"cleared_at": datetime(2025, 3, 1, 2, 0)}, "cleared_at"),
        ({"documents": "manifest 1"}, "documents"),
        ({"ccrns": ["C1", 2]}, "ccrns"),
        ({"decision": "wave"}, "decision"),
        ({"uuid": "not-a-uuid"}, "uuid"),
        ({"vrn": None}, "vrn"),
    ],
)
def test_unstorable_record_is_refused_naming_field(kw: dict[str, Any], field: str) -> None:
    """A record that could not be stored and read back raises ValueError naming the field."""
    with pytest.raises(ValueError, match=f"^{field}:"):
        _record(**kw)


def test_records_survive_reopen_in_journal_order(path: Path) -> None:
    """Records appended before close are all there, in append order, after re-opening."""
    with Journal(path) as journal:
        uids = [journal.append_clearance(_record(vrn=f"AB{i}")) for i in range(5)]
    with Journal(path) as journal:
        assert [r.uuid for r in journal.pending_clearances()] == uids
        assert [r.vrn for r in journal.pending_clearances()] == [f"AB{i}" for i in range(5)]


_CHILD = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from contingency.journal import ClearanceRecord, Journal

journal = Journal(Path(sys.argv[1]))
i = 0
while True:
    uid = journal.append_clearance(ClearanceRecord(
        node="node-a", officer="officer-17", lbcp="LMC", vrn=f"KILL{i}", decision="release",
        documents=("m",), ccrns=(), cleared_at=datetime.now(UTC)))
    print(uid, flush=True)
    i += 1
"""


def test_records_survive_sigkill_right_after_append(path: Path) -> None:
    """Every UUID a child printed after append returned is on disk after SIGKILL of the child."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", _CHILD, str(path)]
    with subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        printed = []
        for _ in range(25):
            line = child.stdout.readline().strip()
            if not line:
                child.kill()
                pytest.fail(f"child stopped early: {child.stderr.read()}")
            printed.append(line)
        child.kill()  # SIGKILL while it is busy appending the next record
        assert child.wait() == -9
        # The child runs on while this process is off the CPU: what it printed before the
        # kill and was not read yet is still in the pipe (a CI run saw 27 records for 25 read).
        printed += child.stdout.read().split()
    with Journal(path) as journal:
        found = [r.uuid for r in journal.pending_clearances()]
    # Every record the child printed is there; it may have committed one more it had not
    # printed yet when the kill came, never fewer.
    assert found[: len(printed)] == printed
    assert len(found) - len(printed) in (0, 1)


def test_concurrent_appends_from_two_threads(path: Path) -> None:
    """Two threads appending through one journal lose nothing and mix nothing up."""
    errors: list[BaseException] = []
    with Journal(path) as journal:

        def work(name: str) -> None:
            try:
                for i in range(40):
                    journal.append_clearance(_record(officer=name, vrn=f"V{i}"))
            except BaseException as exc:  # surfaced below, threads cannot fail a test
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in ("off-1", "off-2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        records = journal.pending_clearances()
    assert errors == []
    for name in ("off-1", "off-2"):
        assert [r.vrn for r in records if r.officer == name] == [f"V{i}" for i in range(40)]
    assert len({r.uuid for r in records}) == 80


def test_two_connections_append_to_one_file_concurrently(path: Path) -> None:
    """Two journals open on the same file (as two processes would be) both get every append in."""
    errors: list[BaseException] = []
    Journal(path).close()

    def work(name: str) -> None:
        try:
            with Journal(path) as journal:
                for i in range(30):
                    journal.append_clearance(_record(officer=name, vrn=f"V{i}"))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("off-1", "off-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Journal(path) as journal:
        assert journal.counts().clearances == 60


async def test_appends_through_asyncio_to_thread(path: Path) -> None:
    """Async callers append with asyncio.to_thread, concurrently, and every record lands."""
    with Journal(path) as journal:
        uids = await asyncio.gather(
            *(asyncio.to_thread(journal.append_clearance, _record(vrn=f"T{i}")) for i in range(20))
        )
        assert len(set(uids)) == 20
        stored = await asyncio.to_thread(journal.pending_clearances)
    assert {r.uuid for r in stored} == set(uids)


# --- audit -----------------------------------------------------------------------------------


def test_audit_event_round_trips(path: Path) -> None:
    """An audit event reads back with its time in UTC and its before/after JSON objects."""
    with Journal(path) as journal:
        uid = journal.append_audit(_event(at=T0.astimezone(HKT)))
        (back,) = journal.pending_audit()
    assert back.uuid == uid
    assert back.at == T0
    assert back.before == {"mode": "normal"}
    assert back.after == {"mode": "manual", "scope": None}
    assert (back.actor, back.action, back.subject) == (
        "officer-17",
        "contingency.activate",
        "contingency",
    )


def test_audit_retry_is_idempotent_and_conflict_refused(path: Path) -> None:
    """An audit event retried under its UUID is stored once; other content under it is refused."""
    uid = str(uuid.uuid4())
    with Journal(path) as journal:
        journal.append_audit(_event(uuid=uid, after={"b": 1, "a": 2}))
        journal.append_audit(_event(uuid=uid, after={"a": 2, "b": 1}))  # key order is not content
        with pytest.raises(JournalConflict):
            journal.append_audit(_event(uuid=uid, after={"a": 3}))
        assert journal.counts().audit == 1


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"after": {"x": float("nan")}}, "after"),
        ({"before": {"x": object()}}, "before"),
        ({"after": ["not", "an", "object"]}, "after"),
        ({"at": datetime(2025, 3, 1)}, "at"),
    ],
)
def test_audit_event_that_is_not_json_is_refused(kw: dict[str, Any], field: str) -> None:
    """before/after must be JSON objects PostgreSQL's jsonb accepts (no NaN), at must be aware."""
    with pytest.raises(ValueError, match=f"^{field}:"):
        _event(**kw)


# --- marking imported, counts ----------------------------------------------------------------


def test_mark_imported_is_idempotent_and_keeps_first_time(path: Path) -> None:
    """Marking twice changes nothing the second time; the first import time is kept."""
    with Journal(path) as journal:
        a = journal.append_clearance(_record(vrn="A1"))
        b = journal.append_clearance(_record(vrn="B1"))
        e = journal.append_audit(_event())
        assert journal.mark_imported([a, e], T0) == 2
        assert journal.mark_imported([a, e, b.upper()], T0 + timedelta(hours=1)) == 1
        assert journal.mark_imported([a, b, e], T0 + timedelta(hours=2)) == 0
        assert journal.pending_clearances() == ()
        assert journal.pending_audit() == ()
        assert journal._conn is not None
        stamp = journal._conn.execute("SELECT imported_at FROM clearances WHERE uuid = ?", (a,))
        assert stamp.fetchone()[0] == T0.isoformat()


def test_mark_imported_ignores_unknown_and_rejects_malformed(path: Path) -> None:
    """Unknown UUIDs mark nothing; a malformed one raises before anything is marked."""
    with Journal(path) as journal:
        a = journal.append_clearance(_record())
        assert journal.mark_imported([str(uuid.uuid4())], T0) == 0
        with pytest.raises(ValueError, match=r"uuids\[1\]"):
            journal.mark_imported([a, "nope"], T0)
        assert [r.uuid for r in journal.pending_clearances()] == [a]


def test_marks_survive_reopen(path: Path) -> None:
    """What was marked imported stays marked after re-opening (a crash mid-reconcile resumes)."""
    with Journal(path) as journal:
        a = journal.append_clearance(_record(vrn="A1"))
        b = journal.append_clearance(_record(vrn="B1"))
        journal.mark_imported([a], T0)
    with Journal(path) as journal:
        assert [r.uuid for r in journal.pending_clearances()] == [b]


def test_counts(path: Path) -> None:
    """counts() reports totals and not-yet-imported records of both tables."""
    with Journal(path) as journal:
        assert journal.counts() == JournalCounts(0, 0, 0, 0)
        uids = [journal.append_clearance(_record(vrn=f"C{i}")) for i in range(3)]
        journal.append_audit(_event())
        journal.mark_imported(uids[:1], T0)
        assert journal.counts() == JournalCounts(3, 2, 1, 1)


# --- another node's journal ------------------------------------------------------------------


def test_other_nodes_journal_opens_read_only(path: Path, tmp_path: Path) -> None:
    """A journal copied from another node reads fine read-only and is never modified."""
    with Journal(path) as journal:
        a = journal.append_clearance(_record(node="node-b"))
        e = journal.append_audit(_event())
    copy = tmp_path / "from-node-b" / "node-b.sqlite3"
    copy.parent.mkdir()
    shutil.copy2(path, copy)
    before = copy.read_bytes()
    with Journal.open_readonly(copy) as other:
        assert other.readonly
        assert [(r.uuid, r.node) for r in other.pending_clearances()] == [(a, "node-b")]
        assert [ev.uuid for ev in other.pending_audit()] == [e]
        assert other.counts() == JournalCounts(1, 1, 1, 1)
        with pytest.raises(JournalError, match="read-only"):
            other.append_clearance(_record())
        with pytest.raises(JournalError, match="read-only"):
            other.mark_imported([a], T0)
    assert copy.read_bytes() == before


def test_read_only_open_sees_records_of_a_killed_writer(path: Path) -> None:
    """Records still only in the WAL of a SIGKILLed node are visible to a read-only open."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as child:
        assert child.stdout is not None
        printed = [child.stdout.readline().strip() for _ in range(5)]
        child.kill()
        child.wait()
    assert all(printed)
    with Journal.open_readonly(path) as other:
        assert [r.uuid for r in other.pending_clearances()][:5] == printed


def test_read_only_open_of_missing_file_creates_nothing(tmp_path: Path) -> None:
    """Opening a missing journal read-only raises FileNotFoundError and creates no file."""
    missing = tmp_path / "nothing.sqlite3"
    with pytest.raises(FileNotFoundError):
        Journal.open_readonly(missing)
    assert list(tmp_path.iterdir()) == []


def test_read_only_open_refuses_a_database_that_is_not_a_journal(tmp_path: Path) -> None:
    """An SQLite file without the journal schema is not read as an (empty) journal."""
    path = tmp_path / "plain.sqlite3"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(JournalError, match="not a journal"):
        Journal.open_readonly(path)


# --- records set aside (#10 item 3) -----------------------------------------------------------


def test_a_set_aside_record_is_no_longer_pending_and_keeps_its_reason(path: Path) -> None:
    """#10 item 3: a record reconciliation could not import is set aside with the reason: it
    leaves the pending lists (so reconciliation can finish), is counted, and stays listed."""
    with Journal(path) as journal:
        bad = journal.append_clearance(_record(documents=("a\x00b",)))
        good = journal.append_clearance(_record(vrn="CD5678"))
        ev = journal.append_audit(_event())
        assert journal.set_aside(bad, "DataError: NUL in documents", T0)
        assert journal.set_aside(ev, "refused", T0)
        assert [r.uuid for r in journal.pending_clearances()] == [good]
        assert journal.pending_audit() == ()
        assert journal.counts() == JournalCounts(2, 1, 1, 0, set_aside=2)
        records = journal.set_aside_records()
        assert [(r.uuid, r.kind, r.reason, r.at) for r in records] == [
            (bad, "clearance", "DataError: NUL in documents", T0),
            (ev, "audit", "refused", T0),
        ]
        assert not journal.set_aside(bad, "again", T0)  # already set aside
        assert not journal.set_aside(str(uuid.uuid4()), "unknown", T0)
        journal.mark_imported([good], T0)
        assert not journal.set_aside(good, "imported already", T0)
    with Journal.open_readonly(path) as other:
        assert other.counts().set_aside == 2
        assert [r.uuid for r in other.pending_clearances()] == []


def test_a_journal_written_before_set_aside_existed_opens_both_ways(path: Path) -> None:
    """#10 item 3: a journal file from before set-aside existed (no such table) still opens
    read-only with nothing set aside, and a read-write open adds the table."""
    with Journal(path) as journal:
        uid = journal.append_clearance(_record())
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("DROP TABLE set_aside")
        conn.commit()
    before = path.read_bytes()
    with Journal.open_readonly(path) as other:
        assert [r.uuid for r in other.pending_clearances()] == [uid]
        assert other.counts() == JournalCounts(1, 1, 0, 0, set_aside=0)
    assert path.read_bytes() == before
    with Journal(path) as journal:
        assert journal.set_aside(uid, "refused", T0)
        assert journal.pending_clearances() == ()
