"""Reconciliation: import every node's journal into PostgreSQL exactly once, then link records
to bundles and consignments.

Serves the pure core `contingency.reconcile_match`. Exactly once: each record is inserted with
`ON CONFLICT (uuid) DO NOTHING` in the same transaction as its effects, and only then marked
imported in the journal; a crash between the two leaves a record that the next run finds
already in PostgreSQL and merely marks. Running it again imports nothing.

A record PostgreSQL refuses (a NUL in a string, for one: such records may have been journalled
before the API refused them) is set aside in its journal with the reason, reported and skipped;
the rest are imported. Each record is stored inside its own `conn.transaction()` (a savepoint
when the caller already holds a transaction), so the refusal rolls back only that record.
Anything else (the database going away) still stops the run: manual mode then stays on.

The API stores clearances with `store_clearance` too; one retried under an Idempotency-Key
(its UUID derived from the key) finds its first record with `replay_clearance`.
"""

from __future__ import annotations

import json
import logging
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from contingency.journal import AuditEvent, ClearanceRecord, Journal
from contingency.reconcile_match import ManualRecord, OpenBundle, match_records

log = logging.getLogger("rocars.reconcile")
# What PostgreSQL (or psycopg, before sending) raises for a record it cannot store: bad data
# (NUL, invalid Unicode escapes in jsonb, values too long) or a violated constraint. Not
# OperationalError: an outage must stop the run, not set every record aside.
REFUSED = (psycopg.DataError, psycopg.IntegrityError, UnicodeError)


def refusal(exc: BaseException) -> str:
    """The reason recorded for a refused record: the error's class and first line (psycopg's
    DETAIL/CONTEXT lines quote the record's content, which the journal already holds)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    # The reason itself goes into PostgreSQL (the reconcile audit entry): keep it storable.
    first = first.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")
    return f"{type(exc).__name__}: {first}"[:500]


def _set_aside(
    journal: Journal, report: ReconcileReport, uid: str, kind: str, exc: BaseException
) -> None:
    reason = refusal(exc)
    journal.set_aside(uid, reason, datetime.now(UTC))
    report.set_aside.append(
        {"journal": str(journal.path), "uuid": uid, "kind": kind, "reason": reason}
    )
    log.warning("reconciliation: %s %s in %s set aside: %s", kind, uid, journal.path, reason)


Conn = psycopg.AsyncConnection[Any]
OUTCOME = {"release": ("released", "cleared"), "inspect": ("inspected", "cleared")}


@dataclass
class ReconcileReport:
    journals: list[str] = field(default_factory=list)
    imported: int = 0
    already_imported: int = 0
    matched: int = 0
    unmatched: list[dict[str, Any]] = field(default_factory=list)
    audit_imported: int = 0
    set_aside: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "journals": self.journals,
            "imported": self.imported,
            "already_imported": self.already_imported,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "audit_imported": self.audit_imported,
            "set_aside": self.set_aside,
        }


async def _open_bundle(conn: Conn, lbcp: str, vrn: str) -> OpenBundle | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, lbcp, vrn FROM bundles WHERE lbcp = %s AND vrn = %s"
        " AND status IN ('open', 'inspecting') FOR UPDATE",
        (lbcp, vrn),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    icur = await conn.execute(
        "SELECT ccrn FROM bundle_items WHERE bundle_id = %s AND active", (row["id"],)
    )
    ccrns = frozenset(r[0] for r in await icur.fetchall())
    if not ccrns:
        return None
    return OpenBundle(str(row["id"]), row["lbcp"], row["vrn"], ccrns)


async def store_clearance(
    conn: Conn, rec: ClearanceRecord, *, source: str
) -> tuple[bool, dict[str, Any]]:
    """Insert one clearance and apply it (inside the caller's transaction).

    Returns (inserted, outcome); inserted is False when the UUID was imported before.
    """
    assert rec.uuid is not None
    cur = await conn.execute(
        "INSERT INTO manual_clearances (uuid, node, officer, lbcp, vrn, decision, documents,"
        " ccrns, cleared_at, recorded_at, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s) ON CONFLICT (uuid) DO NOTHING RETURNING uuid",
        (
            rec.uuid,
            rec.node,
            rec.officer,
            rec.lbcp,
            rec.vrn,
            rec.decision,
            json.dumps(list(rec.documents)),
            json.dumps(list(rec.ccrns)),
            rec.cleared_at,
            rec.recorded_at or datetime.now(UTC),
            source,
        ),
    )
    if await cur.fetchone() is None:
        return False, {}
    bundle = await _open_bundle(conn, rec.lbcp, rec.vrn)
    ccrns = rec.ccrns or (tuple(sorted(bundle.ccrns)) if bundle else ())
    outcome: dict[str, Any] = {"uuid": rec.uuid, "bundle_id": None, "matched": [], "unmatched": []}
    if not ccrns:
        outcome["unmatched"] = [{"ccrn": None, "reason": "no CCRN recorded and no open bundle"}]
    else:
        kcur = await conn.execute(
            "SELECT ccrn FROM consignments WHERE ccrn = ANY(%s)", (list(ccrns),)
        )
        known = {r[0] for r in await kcur.fetchall()}
        record = ManualRecord(rec.uuid, rec.lbcp, rec.vrn, ccrns, rec.decision, rec.cleared_at)
        (m,) = match_records([record], [bundle] if bundle else [], known)
        outcome.update(
            bundle_id=m.bundle_id,
            matched=list(m.matched),
            unmatched=[{"ccrn": u.ccrn, "reason": u.reason} for u in m.unmatched],
        )
        if m.bundle_id is not None and rec.decision in OUTCOME:
            lbcp_outcome, status = OUTCOME[rec.decision]
            await conn.execute(
                "UPDATE bundles SET status = 'closed', outcome = %s, closed_at = %s WHERE id = %s",
                (lbcp_outcome, rec.cleared_at, int(m.bundle_id)),
            )
            await conn.execute(
                "UPDATE bundle_items SET active = false WHERE bundle_id = %s", (int(m.bundle_id),)
            )
            await conn.execute(
                "UPDATE consignments SET status = %s, lbcp_outcome = %s WHERE ccrn = ANY(%s)",
                (status, lbcp_outcome, list(m.matched)),
            )
    await conn.execute(
        "UPDATE manual_clearances SET bundle_id = %s, matched = %s, unmatched = %s WHERE uuid = %s",
        (
            int(outcome["bundle_id"]) if outcome["bundle_id"] else None,
            json.dumps(outcome["matched"]),
            json.dumps(outcome["unmatched"]),
            rec.uuid,
        ),
    )
    await conn.execute(
        "INSERT INTO audit_log (uuid, at, actor, action, subject, after) VALUES"
        " (%s, %s, %s, 'contingency.clearance', %s, %s) ON CONFLICT (uuid) DO NOTHING",
        (
            str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"clearance:{rec.uuid}")),
            rec.cleared_at,
            f"officer:{rec.officer}",
            f"{rec.lbcp}:{rec.vrn}",
            json.dumps({**outcome, "decision": rec.decision, "source": source}),
        ),
    )
    return True, outcome


async def replay_clearance(conn: Conn, uid: str) -> tuple[ClearanceRecord, dict[str, Any]] | None:
    """The stored clearance `uid` and the outcome `store_clearance` answered for it, for a
    retry that found it stored already (inside the caller's transaction); None if absent.

    The no-op UPDATE makes the caller's COMMIT a real one, which waits for the synchronous
    standby and so for the original row too: a row committed on the primary alone (a cancelled
    wait for the standby, DESIGN.md section 6) is never answered from on its own strength."""
    cur = await conn.execute(
        "UPDATE manual_clearances SET recorded_at = recorded_at WHERE uuid = %s RETURNING"
        " node, officer, lbcp, vrn, decision, documents, ccrns, cleared_at, recorded_at,"
        " bundle_id, matched, unmatched",
        (uid,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    node, officer, lbcp, vrn, decision, documents, ccrns, cleared_at, recorded_at = row[:9]
    bundle_id, matched, unmatched = row[9:]
    rec = ClearanceRecord(
        node=node,
        officer=officer,
        lbcp=lbcp,
        vrn=vrn,
        decision=decision,
        documents=tuple(documents),
        ccrns=tuple(ccrns),
        cleared_at=cleared_at,
        uuid=uid,
        recorded_at=recorded_at,
    )
    outcome = {
        "uuid": rec.uuid,
        "bundle_id": None if bundle_id is None else str(bundle_id),
        "matched": matched,
        "unmatched": unmatched,
    }
    return rec, outcome


async def reconcile(conn: Conn, journal_paths: list[Path]) -> ReconcileReport:
    report = ReconcileReport()
    for path in journal_paths:
        if not path.exists():
            continue
        report.journals.append(str(path))
        journal = Journal(path)
        try:
            for rec in journal.pending_clearances():
                assert rec.uuid is not None
                try:
                    async with conn.transaction():
                        inserted, outcome = await store_clearance(conn, rec, source="journal")
                except REFUSED as exc:
                    _set_aside(journal, report, rec.uuid, "clearance", exc)
                    continue
                journal.mark_imported([rec.uuid], datetime.now(UTC))
                if not inserted:
                    report.already_imported += 1
                    continue
                report.imported += 1
                if outcome.get("bundle_id"):
                    report.matched += 1
                if outcome.get("unmatched"):
                    report.unmatched.append(outcome)
            for ev in journal.pending_audit():
                assert ev.uuid is not None
                try:
                    inserted = await _store_audit(conn, ev)
                except REFUSED as exc:
                    _set_aside(journal, report, ev.uuid, "audit", exc)
                    continue
                if inserted:
                    report.audit_imported += 1
                journal.mark_imported([ev.uuid], datetime.now(UTC))
        finally:
            journal.close()
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO audit_log (actor, action, subject, after) VALUES"
            " ('system', 'contingency.reconcile', 'journals', %s)",
            (json.dumps(report.as_dict()),),
        )
    log.info("reconciliation: %s", report.as_dict())
    return report


async def _store_audit(conn: Conn, ev: AuditEvent) -> bool:
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO audit_log (uuid, at, actor, action, subject, before, after)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (uuid) DO NOTHING"
            " RETURNING id",
            (
                ev.uuid,
                ev.at,
                ev.actor,
                ev.action,
                ev.subject,
                json.dumps(ev.before) if ev.before is not None else None,
                json.dumps(ev.after) if ev.after is not None else None,
            ),
        )
        return await cur.fetchone() is not None


def journal_paths(state_root: Path) -> list[Path]:
    return sorted((state_root / "contingency").glob("journal-*.sqlite"))
