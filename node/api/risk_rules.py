"""Risk profiling: officers' rules, the selections they produce, and manual select/release.

Pure rules used: `kernel.domain.risk` (rule validation, assessment, officer override).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from psycopg.rows import dict_row

from kernel.domain.risk import rule_error
from node import appkeys
from node.account import Account
from node.api import common
from node.api.bundles import refresh_bundle_of
from node.auth import require
from node.schemas import RuleIn, RulePatch, SelectionIn, iso
from node.validation import invalid, read_model
from node.writes import Conn, run_write


def _rule_json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "kind": r["kind"],
        "value": r["value"],
        "lbcp": r["lbcp"],
        "active": r["active"],
        "created_at": iso(r["created_at"]),
    }


async def list_rules(request: web.Request) -> web.Response:
    await require(request, "officer")
    return web.json_response({"items": await all_rules(request)})


async def all_rules(request: web.Request) -> list[dict[str, Any]]:
    """Every risk rule, oldest first (the API's and the officers' pages' list)."""
    async with request.app[appkeys.POOL].connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute("SELECT * FROM risk_rules ORDER BY id")
        rows = await cur.fetchall()
    return [_rule_json(r) for r in rows]


async def create_rule(request: web.Request) -> web.Response:
    account = await require(request, "officer")
    body, r = await read_model(request, RuleIn)
    return await create_rule_as(request, account, body, r)


async def create_rule_as(
    request: web.Request, account: Account, body: bytes, r: RuleIn
) -> web.Response:
    err = rule_error(r.kind, r.value)
    if err is not None:
        raise invalid([{"field": "value", "message": err}], detail=err)
    if r.lbcp is not None:
        common.check_lbcp(r.lbcp)

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "INSERT INTO risk_rules (kind, value, lbcp, active, created_by)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING *",
            (r.kind, r.value, r.lbcp, r.active, account.id),
        )
        row = await cur.fetchone()
        assert row is not None
        out = _rule_json(row)
        await common.audit(
            conn,
            actor=account.actor,
            action="risk_rule.create",
            subject=f"rule:{row['id']}",
            after=out,
        )
        return 201, out

    return await run_write(request, account, body, write)


async def update_rule(request: web.Request) -> web.Response:
    account = await require(request, "officer")
    rule_id = common.path_id(request, "rule")
    body, p = await read_model(request, RulePatch)
    return await update_rule_as(request, account, rule_id, body, p)


async def update_rule_as(
    request: web.Request, account: Account, rule_id: int, body: bytes, p: RulePatch
) -> web.Response:
    raw = str(rule_id)

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute("SELECT * FROM risk_rules WHERE id = %s FOR UPDATE", (int(raw),))
        before = await cur.fetchone()
        if before is None:
            raise common.not_found(f"risk rule {raw}")
        await cur.execute(
            "UPDATE risk_rules SET active = %s WHERE id = %s RETURNING *", (p.active, int(raw))
        )
        row = await cur.fetchone()
        assert row is not None
        out = _rule_json(row)
        await common.audit(
            conn,
            actor=account.actor,
            action="risk_rule.update",
            subject=f"rule:{raw}",
            before=_rule_json(before),
            after=out,
        )
        return 200, out

    return await run_write(request, account, body, write)


async def selections(request: web.Request) -> web.Response:
    await require(request, "officer")
    return web.json_response(await selection_queue(request, request.query.get("lbcp")))


async def selection_queue(request: web.Request, lbcp: str | None) -> dict[str, Any]:
    """The consignments and trucks selected for inspection and still to cross, at `lbcp` or
    everywhere (the API's and the officers' pages' queue)."""
    if lbcp is not None:
        common.check_lbcp(lbcp)
    async with request.app[appkeys.POOL].connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT c.*, (SELECT b.vrn FROM bundle_items i JOIN bundles b ON b.id = i.bundle_id"
            " WHERE i.ccrn = c.ccrn AND i.active) AS vrn FROM consignments c"
            " WHERE c.selected AND c.status IN ('submitted', 'bundled')"
            " AND (%(lbcp)s::text IS NULL OR c.lbcp = %(lbcp)s) ORDER BY c.expected_at",
            {"lbcp": lbcp},
        )
        rows = await cur.fetchall()
        await cur.execute(
            "SELECT * FROM bundles WHERE selected AND status IN ('open', 'inspecting')"
            " AND (%(lbcp)s::text IS NULL OR lbcp = %(lbcp)s) ORDER BY not_before",
            {"lbcp": lbcp},
        )
        trucks = await cur.fetchall()
    return {
        "consignments": [
            {**common.consignment_json(r, officer=True), "vrn": r["vrn"]} for r in rows
        ],
        "trucks": [
            {
                "bundle_id": b["id"],
                "vrn": b["vrn"],
                "lbcp": b["lbcp"],
                "status": b["status"],
                "not_before": iso(b["not_before"]),
                "reasons": b["reasons"],
            }
            for b in trucks
        ],
    }


async def override(request: web.Request) -> web.Response:
    account = await require(request, "officer")
    ccrn = common.check_ccrn(request.match_info["ccrn"])
    body, s = await read_model(request, SelectionIn)

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        row = await common.fetch_consignment(conn, ccrn, lock=True)
        if row is None:
            raise common.not_found(f"consignment {ccrn}")
        if row["status"] not in ("submitted", "bundled"):
            raise common.conflict(f"consignment {ccrn} is {row['status']}")
        ov = {"action": s.action, "officer": account.actor, "reason": s.reason}
        await conn.execute(
            "UPDATE consignments SET override = %s WHERE ccrn = %s", (json.dumps(ov), ccrn)
        )
        row["override"] = ov
        await refresh_bundle_of(conn, ccrn, row, await common.load_rules(conn))
        new = await common.fetch_consignment(conn, ccrn)
        assert new is not None
        out = common.consignment_json(new, officer=True)
        await common.audit(
            conn,
            actor=account.actor,
            action=f"consignment.{s.action}",
            subject=ccrn,
            before={"selected": row["selected"]},
            after={**ov, "selected": new["selected"]},
        )
        return 200, out

    return await run_write(request, account, body, write)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/risk-rules", list_rules)
    app.router.add_post("/v1/risk-rules", create_rule)
    app.router.add_patch("/v1/risk-rules/{id}", update_rule)
    app.router.add_get("/v1/selections", selections)
    app.router.add_post("/v1/consignments/{ccrn}/selection", override)
