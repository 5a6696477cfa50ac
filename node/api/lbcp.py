"""The LBCP gate: a truck arrives, the gate answers release / inspect / hold / manual at once.

Pure rule used: `kernel.domain.gate` (it owns the precedence, manual mode first). Everything the
decision needs was precomputed on the bundle row at bundling/profiling time, so the path is one
indexed lookup plus the arrival record; when the mode alone decides, no database is touched.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from psycopg.rows import dict_row

from kernel.domain.gate import BundleAtGate, decision_by_mode, gate_decision
from node import appkeys
from node.api import common
from node.api.bundles import bundle_json
from node.api.outcomes import counted
from node.auth import require
from node.schemas import ArrivalIn, InspectionIn, iso
from node.validation import read_model
from node.writes import Conn, run_write


@counted(lambda m: m.arrival_outcomes)
async def arrival(request: web.Request) -> web.Response:
    account = await require(request, "officer")
    code = common.check_lbcp(request.match_info["code"], field="code")
    body, a = await read_model(request, ArrivalIn)
    at = common.now(request)
    contingency = request.app[appkeys.CONTINGENCY]
    mode = contingency.mode_for(code)
    by_mode = decision_by_mode(mode)
    decisions = request.app[appkeys.METRICS].arrival_decisions
    if by_mode is not None:
        decisions[by_mode.decision].inc()
        # Answered without the database: manual clearance works when PostgreSQL is down.
        return web.json_response(
            {
                "lbcp": code,
                "vrn": a.vrn,
                "decision": by_mode.decision,
                "reason": by_mode.reason,
                "mode": mode,
                "since": iso(contingency.since()),
                "at": iso(at),
            }
        )

    decided: str | None = None  # by `write`, so not when the arrival is a replay
    reads: dict[str, Any] = {}  # the cursors `read` sent, for `write`

    async def read(conn: Conn) -> None:
        dcur, icur = conn.cursor(row_factory=dict_row), conn.cursor()
        await dcur.execute(
            "SELECT * FROM bundles WHERE lbcp = %s AND vrn = %s"
            " AND status IN ('open', 'inspecting') FOR UPDATE",
            (code, a.vrn),
        )
        # Pipelined, this travels with the lock above and runs once it is held, in a snapshot
        # of its own: the items as they are when the bundle is ours.
        await icur.execute(
            "SELECT ccrn FROM bundle_items WHERE active AND bundle_id = (SELECT id FROM bundles"
            " WHERE lbcp = %s AND vrn = %s AND status IN ('open', 'inspecting')) ORDER BY ccrn",
            (code, a.vrn),
        )
        reads.update(bundle=dcur, items=icur)

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        nonlocal decided
        dcur, icur = reads["bundle"], reads["items"]
        b = await dcur.fetchone()
        items = [r[0] for r in await icur.fetchall()]
        d = gate_decision(now=at, mode=mode, bundle=_at_gate(b))
        decision, reason, until = d.decision, d.reason, d.until
        ccrns: list[str] = [] if b is None else items
        bundle_id = b["id"] if b else None
        out = {
            "lbcp": code,
            "vrn": a.vrn,
            "decision": decision,
            "reason": reason,
            "until": iso(until),
            "bundle_id": bundle_id,
            "ccrns": ccrns,
            "at": iso(at),
        }
        params = {
            "lbcp": code,
            "vrn": a.vrn,
            "bundle_id": bundle_id,
            "decision": decision,
            "reason": reason,
            "until": until,
            "officer": account.id,
            "at": at,
            **common.audit_params(
                actor=account.actor, action="lbcp.arrival", subject=f"{code}:{a.vrn}", after=out
            ),
        }
        if b is not None and decision == "release":
            params.update(outcome="released", status="cleared", ccrns=ccrns)
            await conn.execute(_ARRIVAL_RELEASE, params)
        elif b is not None and decision == "inspect" and b["status"] == "open":
            await conn.execute(_ARRIVAL_INSPECT, params)
        else:
            await conn.execute(_ARRIVAL, params)
        decided = decision
        return 200, out

    # Nothing in `write` looks at a statement's outcome before reading: pipelined, the whole
    # decision is two round trips (#11 target 2): the idempotency lock and lookup with the
    # bundle's reads, then the one statement of writes with COMMIT.
    response = await run_write(request, account, body, write, pipeline=True, prefetch=read)
    if decided is not None:  # and committed, or run_write would have raised
        decisions[decided].inc()
    return response


def _at_gate(row: dict[str, Any] | None) -> BundleAtGate | None:
    if row is None:
        return None
    return BundleAtGate(
        status=row["status"],
        not_before=row["not_before"],
        selected=row["selected"],
        reasons=tuple(row["reasons"]),
    )


# An arrival's writes in one statement (#11 target 2: each statement costs the node and
# PostgreSQL a round of work): the arrival record, what the decision does to the bundle, the
# audit record. Data-modifying CTEs of one statement see one snapshot and touch different
# tables; the bundle's row is already locked by the FOR UPDATE read.
_ARRIVAL_RECORD = (
    "a AS (INSERT INTO arrivals (lbcp, vrn, bundle_id, decision, reason, until, officer_id, at)"
    " VALUES (%(lbcp)s, %(vrn)s, %(bundle_id)s, %(decision)s, %(reason)s, %(until)s,"
    " %(officer)s, %(at)s))"
)
# Closing a bundle: the bundle, its items, their consignments (an arrival's release and an
# inspection's result).
_CLOSE = (
    "b AS (UPDATE bundles SET status = 'closed', outcome = %(outcome)s, closed_at = %(at)s"
    " WHERE id = %(bundle_id)s)",
    "i AS (UPDATE bundle_items SET active = false WHERE bundle_id = %(bundle_id)s)",
    "c AS (UPDATE consignments SET status = %(status)s, lbcp_outcome = %(outcome)s"
    " WHERE ccrn = ANY(%(ccrns)s))",
)
_INSPECTING = "b AS (UPDATE bundles SET status = 'inspecting' WHERE id = %(bundle_id)s)"


def _with(*ctes: str) -> str:
    return "WITH " + ", ".join(ctes) + " " + common.AUDIT_INSERT


_ARRIVAL = _with(_ARRIVAL_RECORD)
_ARRIVAL_INSPECT = _with(_ARRIVAL_RECORD, _INSPECTING)
_ARRIVAL_RELEASE = _with(_ARRIVAL_RECORD, *_CLOSE)
_INSPECTION = _with(*_CLOSE)


async def inspection(request: web.Request) -> web.Response:
    account = await require(request, "officer")
    bid = common.path_id(request, "bundle")
    body, i = await read_model(request, InspectionIn)
    at = common.now(request)

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        dcur = conn.cursor(row_factory=dict_row)
        await dcur.execute("SELECT * FROM bundles WHERE id = %s FOR UPDATE", (bid,))
        b = await dcur.fetchone()
        if b is None:
            raise common.not_found(f"bundle {bid}")
        if b["status"] != "inspecting":
            raise common.conflict(
                f"bundle {bid} is {b['status']}; an inspection result is recorded only for a"
                " truck directed to inspection"
            )
        cur = await conn.execute(
            "SELECT ccrn FROM bundle_items WHERE bundle_id = %s AND active ORDER BY ccrn", (bid,)
        )
        ccrns = [r[0] for r in await cur.fetchall()]
        status = "cleared" if i.result == "cleared" else "detained"
        b.update(status="closed", outcome="inspected")
        out = {**bundle_json(b, ccrns, officer=True), "result": i.result, "notes": i.notes}
        await conn.execute(
            _INSPECTION,
            {
                "bundle_id": bid,
                "outcome": "inspected",
                "status": status,
                "at": at,
                "ccrns": ccrns,
                **common.audit_params(
                    actor=account.actor,
                    action="lbcp.inspection",
                    subject=f"bundle:{bid}",
                    after=out,
                ),
            },
        )
        return 200, out

    return await run_write(request, account, body, write)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/lbcp/{code}/arrivals", arrival)
    app.router.add_post("/v1/bundles/{id}/inspection", inspection)
