"""The history checker (#14 item 2): after the faults heal, compare a history
(`deploy.drills.history`) with the database and report every broken promise.

Checks against the database (the history-only ones are in `deploy.drills.history_checks`):

- I1, every acknowledged write is present with its acknowledged content: each acknowledged
  consignment version (a submission's version 1, a batch item's, an amendment's) is in
  `consignment_versions` holding what was acknowledged; the consignment's current version is
  at least the highest acknowledged one and its versions run 1..current with no gap; where the
  acknowledged version is the current one, the row still holds that content; acknowledged
  bundles (with their CCRNs), arrival decisions and manual clearances are there as answered;
  each acknowledged write's idempotency record is there and holds the answer given.
- I2, exactly once: every consignment, amendment version, bundle and arrival that the history's
  accounts made since the run began is explained by an idempotency record (each write with a
  key stores its record in its own transaction, and a key has one record), so a key that
  produced two records leaves one unexplained; no CCRN of theirs is in two open bundles; no
  manual clearance was stored twice; no write refused with a 4xx left a record.
- Info operations (outcome unknown) are allowed to be present or not, but at most once: the
  same unexplained-record checks cover them.

Scale: the acknowledged facts are loaded with COPY into temporary tables, analysed, and joined
set-wise; the history's accounts bound every scan of the big tables by their indexes. Runs
in one REPEATABLE READ transaction (one snapshot) that is rolled back (the temporary tables go
with it); given a connection inside a transaction, in a savepoint of it instead. Needs a role
that may create temporary tables: the owner (`admin.connect_leader(..., account="owner")`);
the application role has no TEMP.

The history's accounts should be the workload's own: consignments they made without a key
since the run began count as duplicates. Manual clearances a node journalled (202) must be
reconciled (manual mode switched off) before checking, or they count as lost.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from deploy import admin
from deploy.drills.history import KINDS, OUTCOMES, History, Operation
from deploy.drills.history_checks import (
    Anomaly,
    Window,
    history_anomalies,
    unavailability,
    without_mode,
)
from deploy.state import StateDir
from deploy.topology import Topology
from kernel.errors import ComponentUnavailable
from node.schemas import ConsignmentIn

Conn = psycopg.AsyncConnection[Any]
# Clocks of the machines writing timestamps may differ this much from the recorder's.
SKEW_S = 2.0
# Consignment fields compared with the stored row (the others are formatted by the server).
CONTENT_FIELDS = tuple(f for f in ConsignmentIn.model_fields if f not in ("expected_at", "itfs"))


@dataclass
class CheckReport:
    operations: dict[str, dict[str, int]]  # kind -> outcome -> count
    anomalies: list[Anomaly]
    windows: list[Window]
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.anomalies

    def anomaly_counts(self) -> dict[str, int]:
        return dict(Counter(a.kind for a in self.anomalies))

    def worst_gap(self) -> float:
        return max((w.duration for w in self.windows), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "operations": self.operations,
            "anomaly_counts": self.anomaly_counts(),
            "anomalies": [asdict(a) for a in self.anomalies],
            "windows": [{**asdict(w), "duration": round(w.duration, 3)} for w in self.windows],
            "warnings": self.warnings,
            "timings": self.timings,
        }

    def summary(self, *, show: int = 20) -> str:
        lines = ["operations by outcome:"]
        for kind, counts in self.operations.items():
            parts = ", ".join(f"{o} {counts.get(o, 0)}" for o in OUTCOMES)
            lines.append(f"  {kind:10s} {parts}")
        lines.append(f"anomalies: {len(self.anomalies)}")
        for kind, n in sorted(self.anomaly_counts().items()):
            lines.append(f"  {kind}: {n}")
        lines += [f"    {a.promise} op {a.op}: {a.detail}" for a in self.anomalies[:show]]
        lines.append(f"unavailability windows: {len(self.windows)}")
        lines += [
            f"  {w.start:9.3f} .. {w.end:9.3f} ({w.duration:.3f} s, {w.attempts} attempts,"
            f" {w.unresolved} failed or unknown)"
            for w in self.windows
        ]
        if self.warnings:
            lines.append(f"warnings: {len(self.warnings)}")
            lines += [f"  {w}" for w in self.warnings[:show]]
        return "\n".join(lines)


def operation_counts(ops: Iterable[Operation]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for op in ops:
        by = counts.setdefault(op.kind, dict.fromkeys(OUTCOMES, 0))
        by[op.type] += 1
    return {k: counts[k] for k in KINDS if k in counts}


# -- what the history acknowledged, as rows for the temporary tables -------------------------

_TABLES = {
    "chk_versions": "op bigint, ccrn text, version integer, fragment jsonb, content jsonb",
    "chk_records": "op bigint, account_id bigint, key text, answer jsonb",
    "chk_refused": "op bigint, account_id bigint, key text",
    "chk_bundles": "op bigint, bundle_id bigint, trucker_id bigint, vrn text, lbcp text",
    "chk_bundle_items": "op bigint, bundle_id bigint, ccrn text",
    "chk_arrivals": "op bigint, officer_id bigint, lbcp text, vrn text, at timestamptz,"
    " decision text",
    "chk_clearances": "op bigint, uuid uuid, vrn text, decision text",
}


def _content(doc: dict[str, Any]) -> str:
    return json.dumps({f: doc[f] for f in CONTENT_FIELDS if f in doc})


def _rows(ops: Sequence[Operation]) -> dict[str, list[tuple[Any, ...]]]:
    rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in _TABLES}
    for op in ops:
        inv, r = op.invoke, op.result
        # A manual clearance's key names its record's UUID; it has no idempotency record.
        keyed = inv.key is not None and op.kind != "clearance"
        if op.type == "fail" and keyed:
            rows["chk_refused"].append((op.id, inv.account, inv.key))
        if op.type != "ok" or not isinstance(r, dict):
            continue
        answer = without_mode(r)
        if op.kind == "arrival" and "until" not in r:
            continue  # decided by manual mode alone: nothing written, no record
        if keyed:
            rows["chk_records"].append((op.id, inv.account, inv.key, json.dumps(answer)))
        if op.kind in ("submit", "amend"):
            rows["chk_versions"].append(
                (op.id, r["ccrn"], r["version"], json.dumps(answer), _content(r))
            )
        elif op.kind == "batch":
            items = inv.input.get("items", [])
            for res in r.get("results", []):
                if "ccrn" in res:
                    content = _content(items[res["index"]])
                    rows["chk_versions"].append((op.id, res["ccrn"], 1, content, content))
        elif op.kind == "bundle":
            rows["chk_bundles"].append((op.id, r["id"], inv.account, r["vrn"], r["lbcp"]))
            rows["chk_bundle_items"] += [(op.id, r["id"], c) for c in r.get("ccrns", [])]
        elif op.kind == "arrival":
            at = datetime.fromisoformat(r["at"])
            rows["chk_arrivals"].append(
                (op.id, inv.account, r["lbcp"], r["vrn"], at, r["decision"])
            )
        elif op.kind == "clearance":
            clearance = (op.id, r["uuid"], inv.input["vrn"], inv.input["decision"])
            rows["chk_clearances"].append(clearance)
    return rows


# -- the queries: (anomaly kind, promise, SQL returning (op, detail)) --------------------------

_ACKED = [
    (
        "lost",
        "I1",
        "SELECT a.op, 'consignment ' || a.ccrn || ' version ' || a.version || ' is missing'"
        " FROM chk_versions a LEFT JOIN consignment_versions v USING (ccrn, version)"
        " WHERE v.ccrn IS NULL",
    ),
    (
        "changed",
        "I1",
        "SELECT a.op, 'consignment ' || a.ccrn || ' version ' || a.version"
        " || ' holds other content than acknowledged'"
        " FROM chk_versions a JOIN consignment_versions v USING (ccrn, version)"
        " WHERE NOT v.data @> a.fragment",
    ),
    (
        "changed",
        "I1",
        "SELECT a.op, 'consignment ' || a.ccrn || ' (current version ' || a.version"
        " || ') differs from what was acknowledged'"
        " FROM chk_versions a JOIN consignments c ON c.ccrn = a.ccrn AND c.version = a.version"
        " WHERE NOT jsonb_build_object("
        + ", ".join(f"'{f}', c.{f}" for f in CONTENT_FIELDS)
        + ") @> a.content",
    ),
    (
        "version-regressed",
        "I1",
        "SELECT min(a.op), 'consignment ' || a.ccrn || ' is at version '"
        " || coalesce(c.version::text, 'none') || ', below acknowledged version '"
        " || max(a.version) FROM chk_versions a LEFT JOIN consignments c USING (ccrn)"
        " GROUP BY a.ccrn, c.version HAVING c.version IS NULL OR c.version < max(a.version)",
    ),
    (
        "version-gap",
        "linearizable",
        "SELECT NULL::bigint, 'consignment ' || c.ccrn || ' is at version ' || c.version"
        " || ' but has ' || count(*) || ' versions'"
        " FROM (SELECT DISTINCT ccrn FROM chk_versions) a JOIN consignments c USING (ccrn)"
        " JOIN consignment_versions v USING (ccrn) GROUP BY c.ccrn, c.version"
        " HAVING count(*) <> c.version OR max(v.version) <> c.version",
    ),
    (
        "record-missing",
        "I2",
        "SELECT a.op, 'no idempotency record for key ' || a.key FROM chk_records a"
        " LEFT JOIN idempotency_keys k USING (account_id, key) WHERE k.key IS NULL",
    ),
    (
        "record-differs",
        "I2",
        "SELECT a.op, 'the record of key ' || a.key || ' is not the answer given'"
        " FROM chk_records a JOIN idempotency_keys k USING (account_id, key)"
        " WHERE k.response <> a.answer",
    ),
    (
        "refused-write-applied",
        "I2",
        "SELECT a.op, 'a write refused with a 4xx left a record under key ' || a.key"
        " FROM chk_refused a JOIN idempotency_keys k USING (account_id, key)"
        " WHERE k.created_at >= %(since)s",
    ),
    (
        "lost",
        "I1",
        "SELECT a.op, 'bundle ' || a.bundle_id || ' is missing or not as acknowledged'"
        " FROM chk_bundles a LEFT JOIN bundles b ON b.id = a.bundle_id"
        " WHERE b.id IS NULL OR (b.trucker_id, b.vrn, b.lbcp)"
        " IS DISTINCT FROM (a.trucker_id, a.vrn, a.lbcp)",
    ),
    (
        "lost",
        "I1",
        "SELECT a.op, 'bundle ' || a.bundle_id || ' lost consignment ' || a.ccrn"
        " FROM chk_bundle_items a LEFT JOIN bundle_items i USING (bundle_id, ccrn)"
        " WHERE i.ccrn IS NULL",
    ),
    (
        "lost",
        "I1",
        "SELECT a.op, 'arrival of ' || a.vrn || ' at ' || a.lbcp || ' (' || a.decision"
        " || ') is missing' FROM chk_arrivals a LEFT JOIN arrivals r"
        " ON (r.officer_id, r.lbcp, r.vrn, r.at, r.decision)"
        " = (a.officer_id, a.lbcp, a.vrn, a.at, a.decision) WHERE r.id IS NULL",
    ),
    (
        "lost",
        "I1",
        "SELECT a.op, 'manual clearance ' || a.uuid || ' is missing or not as acknowledged'"
        " FROM chk_clearances a LEFT JOIN manual_clearances m USING (uuid)"
        " WHERE m.uuid IS NULL OR (m.vrn, m.decision) IS DISTINCT FROM (a.vrn, a.decision)",
    ),
]

# Records the history's accounts made since it began that no idempotency record explains.
_EXPLAINED_CCRNS = (
    "SELECT response ->> 'ccrn' FROM idempotency_keys WHERE account_id = ANY(%(traders)s)"
    " AND created_at >= %(since)s AND response ->> 'version' = '1'"
    " UNION ALL SELECT r ->> 'ccrn' FROM idempotency_keys k,"
    " jsonb_array_elements(k.response -> 'results') r WHERE k.account_id = ANY(%(traders)s)"
    " AND k.created_at >= %(since)s AND jsonb_typeof(k.response -> 'results') = 'array'"
)
_UNEXPLAINED = [
    (
        "duplicate",
        "I2",
        "SELECT NULL::bigint, 'consignment ' || ccrn || ' was made by no acknowledged key'"
        " FROM (SELECT ccrn FROM consignments WHERE owner_id = ANY(%(traders)s)"
        f" AND created_at >= %(since)s EXCEPT ({_EXPLAINED_CCRNS})) d",
    ),
    (
        "duplicate",
        "I2",
        "SELECT NULL::bigint, 'version ' || version || ' of ' || ccrn"
        " || ' was made by no acknowledged key' FROM ("
        " SELECT v.ccrn, v.version FROM consignments c JOIN consignment_versions v USING (ccrn)"
        " WHERE c.owner_id = ANY(%(traders)s) AND v.version > 1 AND v.changed_at >= %(since)s"
        " EXCEPT SELECT response ->> 'ccrn', (response ->> 'version')::integer"
        " FROM idempotency_keys WHERE account_id = ANY(%(traders)s) AND created_at >= %(since)s"
        " AND jsonb_typeof(response -> 'version') = 'number'"
        " AND (response ->> 'version')::integer > 1) d",
    ),
    (
        "duplicate",
        "I2",
        "SELECT NULL::bigint, 'bundle ' || id || ' was made by no acknowledged key' FROM ("
        " SELECT id FROM bundles WHERE trucker_id = ANY(%(truckers)s) AND created_at >= %(since)s"
        " EXCEPT SELECT (response ->> 'id')::bigint FROM idempotency_keys"
        " WHERE account_id = ANY(%(truckers)s) AND created_at >= %(since)s"
        " AND jsonb_typeof(response -> 'id') = 'number') d",
    ),
    (
        "duplicate",
        "I2",
        "SELECT NULL::bigint, 'arrival of ' || vrn || ' at ' || lbcp || ' (' || at"
        " || ') was recorded by no acknowledged key' FROM ("
        " SELECT lbcp, vrn, at FROM arrivals WHERE officer_id = ANY(%(officers)s)"
        " AND at >= %(since)s EXCEPT SELECT response ->> 'lbcp', response ->> 'vrn',"
        " (response ->> 'at')::timestamptz FROM idempotency_keys"
        " WHERE account_id = ANY(%(officers)s) AND created_at >= %(since)s"
        " AND response ? 'decision' AND response ? 'at') d",
    ),
    (
        "duplicate",
        "I2",
        "SELECT NULL::bigint, 'manual clearance of ' || vrn || ' at ' || lbcp || ' stored '"
        " || count(*) || ' times' FROM manual_clearances"
        " WHERE officer = ANY(%(officer_names)s) AND recorded_at >= %(since)s"
        " GROUP BY officer, lbcp, vrn, decision, cleared_at HAVING count(*) > 1",
    ),
    (
        "two-open-bundles",
        "I2",
        "SELECT NULL::bigint, 'consignment ' || i.ccrn || ' is in ' || count(DISTINCT b.id)"
        " || ' open bundles' FROM consignments c JOIN bundle_items i USING (ccrn)"
        " JOIN bundles b ON b.id = i.bundle_id WHERE c.owner_id = ANY(%(traders)s)"
        " AND b.status IN ('open', 'inspecting') GROUP BY i.ccrn"
        " HAVING count(DISTINCT b.id) > 1",
    ),
]


def _accounts(ops: Iterable[Operation]) -> dict[str, list[int]]:
    by: dict[str, set[int]] = {"traders": set(), "truckers": set(), "officers": set()}
    role = {"submit": "traders", "batch": "traders", "amend": "traders", "bundle": "truckers"}
    for op in ops:
        by[role.get(op.kind, "officers")].add(op.invoke.account)
    return {k: sorted(v) for k, v in by.items()}


async def _load(conn: Conn, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    for table, columns in _TABLES.items():
        await conn.execute(f"CREATE TEMP TABLE {table} ({columns}) ON COMMIT DROP")
        names = ", ".join(c.split()[0] for c in columns.split(", "))
        async with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows[table]:
                await copy.write_row(row)
        await conn.execute(f"ANALYZE {table}")


async def _run(
    conn: Conn, queries: Iterable[tuple[str, str, str]], params: dict[str, Any]
) -> list[Anomaly]:
    found = []
    for kind, promise, query in queries:
        cur = await conn.execute(query, params)
        found += [Anomaly(kind, promise, op, detail) for op, detail in await cur.fetchall()]
    return found


async def check(conn: Conn, history: History, *, gap_s: float = 1.0) -> CheckReport:
    """Check `history` against the database `conn` reaches (the leader, after the faults)."""
    t0 = time.monotonic()
    ops = history.operations()
    anomalies, warnings = history_anomalies(history)
    windows = unavailability(ops, gap_s=gap_s)
    timings = {"history_s": time.monotonic() - t0}
    started = history.started_wall()
    since = datetime.fromtimestamp((started or time.time()) - SKEW_S, UTC)
    accounts = _accounts(ops)
    params: dict[str, Any] = {
        "since": since,
        **accounts,
        "officer_names": [str(a) for a in accounts["officers"]],
    }
    # In a transaction of the caller's, its snapshot rules; else one of our own, one snapshot.
    own = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    async with conn.transaction(force_rollback=True):
        if own:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        t1 = time.monotonic()
        await _load(conn, _rows(ops))
        timings["load_s"] = time.monotonic() - t1
        t2 = time.monotonic()
        anomalies += await _run(conn, [*_ACKED, *_UNEXPLAINED], params)
        timings["queries_s"] = time.monotonic() - t2
    timings = {k: round(v, 3) for k, v in timings.items()}
    timings["total_s"] = round(time.monotonic() - t0, 3)
    return CheckReport(operation_counts(ops), anomalies, windows, warnings, timings)


async def check_cluster(
    topo: Topology, state: StateDir, history: History, *, gap_s: float = 1.0, wait_s: float = 60
) -> CheckReport:
    """`check` against the cluster's leader, as the owner role, waiting up to `wait_s` for a
    leader to connect to (the faults have healed, but a failover may still be settling)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn = await admin.connect_leader(topo, state, account="owner")
            break
        except ComponentUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
    async with conn:
        return await check(conn, history, gap_s=gap_s)
