"""#10 item 3 (unit): reconciliation sets aside a journalled record PostgreSQL refuses, and
carries on.

The connection is a fake that refuses, like psycopg does, any parameter holding a NUL and
counts what was stored; tests/integration/test_hostile_reconcile.py does the same against the
real database."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from contingency.journal import AuditEvent, ClearanceRecord, Journal
from contingency.reconcile import reconcile, refusal

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)


class _Cursor:
    def __init__(self, row: Any) -> None:
        self._row = row

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._row = None  # no open bundles

    async def fetchone(self) -> Any:
        return self._row

    async def fetchall(self) -> list[Any]:
        return []


class RefusingConnection:
    """Stands in for psycopg's AsyncConnection: a NUL in any parameter raises DataError (what
    psycopg raises for text, and PostgreSQL for jsonb), rolling back only the innermost
    transaction block, as a savepoint does."""

    def __init__(self, *, down_after: int | None = None) -> None:
        self.committed: list[str] = []  # first words of committed statements
        self._blocks: list[list[str]] = []
        self._down_after = down_after

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self._blocks.append([])
        try:
            yield
        except BaseException:
            self._blocks.pop()
            raise
        done = self._blocks.pop()
        (self._blocks[-1] if self._blocks else self.committed).extend(done)

    def cursor(self, row_factory: Any = None) -> _Cursor:
        return _Cursor(None)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        if self._down_after is not None and len(self.committed) >= self._down_after:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        if any(isinstance(p, str) and ("\x00" in p or "\\u0000" in p) for p in params):
            raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        self._blocks[-1].append(" ".join(sql.split()[:3]))
        return _Cursor((params[0],) if params else None)

    def stored(self, what: str) -> int:
        return sum(1 for s in self.committed if s.startswith(what))


def _record(vrn: str, documents: tuple[str, ...] = ("manifest",)) -> ClearanceRecord:
    return ClearanceRecord(
        node="A",
        officer="17",
        lbcp="LMC",
        vrn=vrn,
        decision="release",
        documents=documents,
        ccrns=(),
        cleared_at=T0,
    )


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "contingency" / "journal-A.sqlite"


async def test_a_refused_record_is_set_aside_and_the_rest_imported(
    journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """#10 item 3: a journalled clearance with a NUL (as could be on disk from before the API
    refused them) is set aside in the journal with the reason, reported and logged; the records
    before and after it are imported, and the run completes (so manual mode can be switched
    off). A second run imports nothing and sets nothing aside again."""
    with Journal(journal_path) as journal:
        first = journal.append_clearance(_record("AB1"))
        bad = journal.append_clearance(_record("AB2", ("ok", "a\x00b")))
        last = journal.append_clearance(_record("AB3"))
        bad_event = journal.append_audit(
            AuditEvent(at=T0, actor="officer:17", action="x", subject="y", after={"n": "\x00"})
        )
        good_event = journal.append_audit(
            AuditEvent(at=T0, actor="officer:17", action="x", subject="y")
        )
    conn = RefusingConnection()
    with caplog.at_level(logging.WARNING, logger="rocars.reconcile"):
        report = await reconcile(conn, [journal_path])  # type: ignore[arg-type]
    assert report.imported == 2
    assert report.audit_imported == 1
    assert [(s["uuid"], s["kind"]) for s in report.set_aside] == [
        (bad, "clearance"),
        (bad_event, "audit"),
    ]
    assert all(s["reason"].startswith("DataError: ") for s in report.set_aside)
    assert report.as_dict()["set_aside"] == report.set_aside
    assert conn.stored("INSERT INTO manual_clearances") == 2
    # The run's own audit entry went in, with the set-aside records in it.
    assert conn.stored("INSERT INTO audit_log") == 2 + 1 + 1
    assert bad in caplog.text
    with Journal(journal_path) as journal:
        assert journal.pending_clearances() == ()
        assert journal.pending_audit() == ()
        assert [(r.uuid, r.reason) for r in journal.set_aside_records()] == [
            (bad, report.set_aside[0]["reason"]),
            (bad_event, report.set_aside[1]["reason"]),
        ]
        assert journal.counts().set_aside == 2
    again = await reconcile(RefusingConnection(), [journal_path])  # type: ignore[arg-type]
    assert (again.imported, again.set_aside) == (0, [])
    assert {first, last, good_event}.isdisjoint(s["uuid"] for s in report.set_aside)


async def test_an_outage_is_not_a_refusal(journal_path: Path) -> None:
    """#10 item 3: the database going away mid-run stops reconciliation (manual mode stays on)
    and sets nothing aside: only records PostgreSQL refuses are set aside."""
    with Journal(journal_path) as journal:
        for i in range(3):
            journal.append_clearance(_record(f"AB{i}"))
    conn = RefusingConnection(down_after=3)  # one clearance (3 statements), then down
    with pytest.raises(psycopg.OperationalError):
        await reconcile(conn, [journal_path])  # type: ignore[arg-type]
    with Journal(journal_path) as journal:
        assert len(journal.pending_clearances()) == 2
        assert journal.set_aside_records() == ()


def test_the_reason_is_one_storable_line() -> None:
    """#10 item 3: the recorded reason is the error's class and first line only (PostgreSQL's
    DETAIL and CONTEXT lines quote the record) and can itself be stored in PostgreSQL."""
    exc = psycopg.DataError("unsupported Unicode escape \x00 \ud800\nDETAIL: the record's text")
    reason = refusal(exc)
    assert reason == "DataError: unsupported Unicode escape \\x00 \\ud800"
    json.dumps(reason).encode()
